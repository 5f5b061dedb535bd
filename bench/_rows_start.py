"""Start latency and start throughput, against ``unshare`` making the same namespaces."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time

from harness.figures import percentile
from jobmgr.api import job_pb2 as pb
from jobmgr.api import job_pb2_grpc as pb_grpc

from ._context import UNSHARE, Context, wait_ended
from ._stats import Row, median, ratio_row

TRUE = pb.StartRequest(cmd="true")
# Quiet time between samples: a start is measured as a lone start, not as part of a burst.
PAUSE = 0.025
WARM_UP = 5
POLL = 0.005


def run_unshare() -> float:
    """Wall time of ``unshare ... true``, spawn to exit, in seconds."""
    started = time.perf_counter()
    subprocess.run([*UNSHARE, "true"], check=True)
    return time.perf_counter() - started


async def start_latency(ctx: Context) -> list[Row]:
    """Start RPC for ``true`` until it returns, interleaved with the unshare baseline."""
    async with ctx.jobmgr() as (_, stub):
        for _ in range(WARM_UP):
            await stub.Start(TRUE)
            run_unshare()
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(ctx.sizes.start_samples):
            await asyncio.sleep(PAUSE)
            started = time.perf_counter()
            await stub.Start(TRUE)
            ours.append(time.perf_counter() - started)
            await asyncio.sleep(PAUSE)
            theirs.append(run_unshare())
    ms = 1000
    n = len(ours)
    return [
        ratio_row(
            "start latency median", median(ours) * ms, "ms", median(theirs) * ms,
            at_most=1.5, note=f"{n} Starts of `true`, each alone on a warm channel",
        ),
        ratio_row(
            "start latency p99", percentile(ours, 99) * ms, "ms", percentile(theirs, 99) * ms,
            note=f"p99 of the same {n} samples; baseline = unshare p99",
        ),
    ]  # fmt: skip


async def start_throughput(ctx: Context) -> list[Row]:
    """Starts of ``true`` from concurrent callers until every job has exited, in jobs/s."""
    total, callers = ctx.sizes.throughput_starts, ctx.sizes.callers
    theirs = await asyncio.to_thread(_unshare_throughput, total, callers)
    async with ctx.jobmgr() as (_, stub):
        for _ in range(WARM_UP):
            await wait_ended(stub, (await stub.Start(TRUE)).uuid)
        tickets = itertools.count()
        ids: list[str] = []

        async def caller() -> None:
            while next(tickets) < total:
                ids.append((await stub.Start(TRUE)).uuid)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        wanted = set(ids)
        await _until_none_running(stub, wanted)
        elapsed = time.perf_counter() - started
        listed = await stub.List(pb.ListRequest(state=pb.JOB_STATE_EXITED))
    exited = sum(1 for s in listed.jobs if s.uuid in wanted and s.exit_code == 0)
    if exited != total:
        raise RuntimeError(f"only {exited} of {total} jobs exited 0")
    return [
        ratio_row(
            "start throughput", total / elapsed, "jobs/s", theirs, at_least=0.5,
            note=f"{total} Starts from {callers} callers until all exited (List polled "
            f"every {POLL * 1000:g} ms once all Starts returned); "
            f"baseline: `xargs -P {callers}` running unshare",
        )
    ]  # fmt: skip


async def _until_none_running(stub: pb_grpc.JobManagerStub, ids: set[str]) -> None:
    """Wait until none of ``ids`` is RUNNING: one List every POLL seconds, so that what is
    measured is starting jobs, not also a follower per job (twice the RPCs)."""
    while True:
        running = await stub.List(pb.ListRequest(state=pb.JOB_STATE_RUNNING))
        if not any(job.uuid in ids for job in running.jobs):
            return
        await asyncio.sleep(POLL)


def _unshare_throughput(total: int, parallel: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(parallel), "-n", "1", *UNSHARE, "true"],
        input="\n".join(str(i) for i in range(total)).encode(),
        check=True,
    )
    return total / (time.perf_counter() - started)
