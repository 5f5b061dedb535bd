"""jobmgr-client's own cost: ``jobmgr-client status ID`` from exec to exit, against the floor
of any Python client of the service: a program that imports grpc and makes the same Status
call over mutual TLS, its request bytes written by hand (no protobuf, no argument parsing).

Most of a short command's time is the interpreter and its imports (grpc's alone is about 40
ms), so the row measures what jobmgr-client adds to that floor: protobuf, its own modules,
its flags and its printing. Both run as an installed program does: from compiled modules.
"""

from __future__ import annotations

import asyncio
import compileall
import os
import subprocess
import sys
import time
from pathlib import Path

import jobmgr
from harness.programs import program, program_env
from jobmgr.api import job_pb2 as pb

from ._context import Context, wait_ended
from ._stats import Row, median, ratio_row

BASELINE = """\
import sys, grpc
ca, cert, key = (open(sys.argv[i], "rb").read() for i in (2, 3, 4))
job = sys.argv[5].encode()
credentials = grpc.ssl_channel_credentials(ca, key, cert)
with grpc.secure_channel(sys.argv[1], credentials) as channel:
    status = channel.unary_unary("/job.JobManager/Status")
    print(len(status(b"\\x0a" + bytes([len(job)]) + job, timeout=30)))
"""
WARM_UP = 3


async def client_status(ctx: Context) -> list[Row]:
    """``jobmgr-client status`` wall time, interleaved with the baseline's."""
    # An installed package comes compiled; a checkout run with PYTHONDONTWRITEBYTECODE would
    # otherwise compile jobmgr's modules on every start and measure that.
    compileall.compile_dir(Path(jobmgr.__file__).parent, quiet=1)
    env = {**program_env(), "GRPC_VERBOSITY": "NONE"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    async with ctx.jobmgr() as (server, stub):
        job = (await stub.Start(pb.StartRequest(cmd="true"))).uuid
        await wait_ended(stub, job)
        names = ("ca.pem", "client_admin.pem", "client_admin.key")
        files = [str(ctx.certs / name) for name in names]
        ours = [
            *program("jobmgr-client"), "--host", server.host, "--port", str(server.port),
            "--ca", files[0], "--cert", files[1], "--key", files[2], "status", job,
        ]  # fmt: skip
        theirs = [sys.executable, "-c", BASELINE, server.target, *files, job]
        samples = ctx.sizes.client_samples
        times = await asyncio.to_thread(_interleaved, ours, theirs, env, WARM_UP, samples)
    ms = 1000
    return [
        ratio_row(
            "client: status wall time", median(times[0]) * ms, "ms", median(times[1]) * ms,
            at_most=1.3,
            note=f"median of {samples} `jobmgr-client status`; baseline: python importing "
            "grpc and making the one Status call over mTLS",
        )
    ]  # fmt: skip


def _interleaved(
    ours: list[str], theirs: list[str], env: dict[str, str], warm_up: int, samples: int
) -> tuple[list[float], list[float]]:
    times: tuple[list[float], list[float]] = ([], [])
    for n in range(warm_up + samples):
        for argv, kept in ((ours, times[0]), (theirs, times[1])):
            started = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True, cwd=os.sep)
            if n >= warm_up:
                kept.append(time.perf_counter() - started)
    return times
