"""Many clients at once: each on a connection of its own, in one asyncio loop, mixing Start,
Status, Output and Stop until a deadline, and recording what each job must turn out to be.

A job prints a known number of numbered lines and then sleeps a while, so its full output is
known in advance; a stopped job's output must be a whole-line prefix of it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from harness.client import CLIENT_OPTIONS
from harness.server import ServerProgram
from jobmgr.api import job_pb2, job_pb2_grpc

NAPS = (0.0, 0.0, 0.2, 0.5, 2.0)


@dataclass
class Expected:
    """What a started job must turn out to be."""

    output: bytes
    stopped: bool = False


@dataclass
class Load:
    """What happened under load."""

    calls: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    status_seconds: list[float] = field(default_factory=list)
    jobs: dict[str, Expected] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)


def expected_output(client: int, lines: int) -> bytes:
    return b"".join(b"c%d-line-%d\n" % (client, i) for i in range(lines))


async def run_load(server: ServerProgram, clients: int, seconds: float) -> Load:
    """``clients`` clients hammering ``server`` for ``seconds``; returns what happened."""
    load = Load()
    deadline = time.monotonic() + seconds
    credentials = server.credentials("admin")
    await asyncio.gather(*(_client(server, credentials, i, deadline, load) for i in range(clients)))
    return load


async def _client(
    server: ServerProgram,
    credentials: grpc.ChannelCredentials,
    index: int,
    deadline: float,
    load: Load,
) -> None:
    rng = random.Random(index)
    async with grpc.aio.secure_channel(server.target, credentials, options=CLIENT_OPTIONS) as ch:
        stub = job_pb2_grpc.JobManagerStub(ch)
        while time.monotonic() < deadline:
            lines, nap = rng.randint(1, 30), rng.choice(NAPS)
            script = (
                f"i=0; while [ $i -lt {lines} ]; do echo c{index}-line-$i; i=$((i+1)); done; "
                f"sleep {nap}"
            )
            request = job_pb2.StartRequest(cmd="sh", args=["-c", script, server.marker])
            reply = await _call(load, "Start", stub.Start(request, timeout=60))
            if reply is None:
                continue
            job = reply.uuid
            expected = Expected(expected_output(index, lines))
            load.jobs[job] = expected
            for _ in range(rng.randint(1, 3)):
                began = time.monotonic()
                got = await _call(load, "Status", stub.Status(job_pb2.StatusRequest(uuid=job)))
                if got is not None:
                    load.status_seconds.append(time.monotonic() - began)
            if rng.random() < 0.3:
                expected.stopped = True
                grace = Duration(seconds=1)
                await _call(load, "Stop", stub.Stop(job_pb2.StopRequest(uuid=job, grace=grace)))
            else:
                await _read_all(stub, job, expected, load)
            if load.jobs and rng.random() < 0.3:  # someone else's job, as it is now
                other = rng.choice(list(load.jobs))
                request_now = job_pb2.OutputRequest(uuid=other, no_follow=True)
                await _drain(load, stub.Output(request_now, timeout=60))


async def _call(load: Load, method: str, call: Any) -> Any:
    try:
        reply = await call
    except grpc.aio.AioRpcError as exc:
        load.calls[f"{method} {exc.code().name}"] += 1
        load.failures.append(f"{method}: {exc.code().name} {exc.details()}")
        return None
    load.calls[f"{method} OK"] += 1
    return reply


async def _drain(load: Load, stream: Any) -> bytes | None:
    data = b""
    try:
        async for message in stream:
            data += message.output
    except grpc.aio.AioRpcError as exc:
        load.calls[f"Output {exc.code().name}"] += 1
        load.failures.append(f"Output: {exc.code().name} {exc.details()}")
        return None
    load.calls["Output OK"] += 1
    return data


async def _read_all(
    stub: job_pb2_grpc.JobManagerStub, job: str, expected: Expected, load: Load
) -> None:
    data = await _drain(load, stub.Output(job_pb2.OutputRequest(uuid=job), timeout=120))
    if data is not None and data != expected.output:
        load.mismatches.append(f"{job}: followed output {data[:80]!r} != {expected.output[:80]!r}")


def check_accounts(server: ServerProgram, load: Load) -> list[str]:
    """Every job started is listed once, ended, and ended as it should with its output."""
    problems = list(load.mismatches)
    stub = server.stub()
    for job in load.jobs:
        server.wait_ended(job, timeout=120)
    listed = [j for j in stub.List(job_pb2.ListRequest(), timeout=60).jobs]
    ids = [j.uuid for j in listed]
    if sorted(ids) != sorted(load.jobs):
        extra, missing = set(ids) - set(load.jobs), set(load.jobs) - set(ids)
        problems.append(f"List: {len(missing)} started jobs missing, {len(extra)} unknown ones")
    for status in listed:
        expected = load.jobs.get(status.uuid)
        if expected is None:
            continue
        output = server.output(status.uuid, follow=False)
        if status.state == job_pb2.JOB_STATE_EXITED and status.exit_code == 0:
            if output != expected.output:
                problems.append(f"{status.uuid}: output {output[:60]!r} is not what it printed")
        elif status.state == job_pb2.JOB_STATE_STOPPED and expected.stopped:
            if not expected.output.startswith(output) or output[-1:] not in (b"", b"\n"):
                problems.append(f"{status.uuid}: stopped, output {output[:60]!r} no prefix")
        else:
            state = job_pb2.JobState.Name(status.state)
            problems.append(
                f"{status.uuid}: {state} exit {status.exit_code} signal "
                f"{status.signal} ({'stop asked' if expected.stopped else 'no stop asked'})"
            )
    return problems
