"""Output rows: one reader, many readers, latency of a line, and the server's memory."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass

from harness.figures import percentile
from jobmgr.api import job_pb2 as pb
from jobmgr.api import job_pb2_grpc as pb_grpc

from ._baseline import stream_call
from ._context import UNLIMITED, Context, wait_ended
from ._procs import rss_bytes
from ._server import channel
from ._stats import MB, MiB, Row, limit_row, median, ratio_row

BASELINE_MIN = 256 * MiB
# Followers attach during this pause, so the job is live when its first byte comes.
ATTACH_PAUSE = 0.5
FOLLOW_JOB = """
import time
while True:
    print(time.time_ns(), flush=True)
    time.sleep(0.01)
"""
# Repetitions of a throughput row each get a fresh server. On this VM, memory the guest has
# not touched lately costs about 1 GiB/s to touch (the host backs it on first use; DAMON pages
# cold memory out), and page cache is such memory: with every earlier repetition's output
# still kept, the launcher's writes fell from ~0.6 to ~4 CPU-seconds per GiB by the third.
REPEAT_NOTE = "each repetition on a fresh server"
# Lines printed before the follower attached come as a backlog: skip this much of the start.
FOLLOW_SKIP_NS = 200_000_000


@dataclass
class Received:
    """One reader's view of a stream: bytes, when the first and last arrived, and a hash."""

    size: int = 0
    first_size: int = 0
    first_at: float = 0.0
    end_at: float = 0.0
    sha256: str = ""


async def receive(messages: AsyncIterable[pb.OutputResponse], *, digest: bool) -> Received:
    got = Received()
    hasher = hashlib.sha256() if digest else None
    async for message in messages:
        data = message.output
        if not got.size:
            got.first_at, got.first_size = time.perf_counter(), len(data)
        got.size += len(data)
        if hasher is not None:
            hasher.update(data)
    got.end_at = time.perf_counter()
    got.sha256 = hasher.hexdigest() if hasher is not None else ""
    return got


def rate(got: Received) -> float:
    """Bytes per second from the first byte to the end: the first message is not counted."""
    return (got.size - got.first_size) / (got.end_at - got.first_at)


def head_job(size: int, *, pause: float = 0.0) -> pb.StartRequest:
    """A job printing ``size`` zero bytes, after ``pause`` seconds (for followers to attach)."""
    head = f"head -c {size} /dev/zero"
    if pause:
        return pb.StartRequest(
            cmd="sh", args=["-c", f"sleep {pause}; exec {head}"], limits=UNLIMITED
        )
    return pb.StartRequest(cmd="head", args=["-c", str(size), "/dev/zero"], limits=UNLIMITED)


async def _bare(ctx: Context, size: int, *, digest: bool) -> Received:
    chan = channel(ctx.bare().target, ctx.certs)
    try:
        call = stream_call(chan)
        await _drain(call(b"0"))  # connect and warm up
        return await receive(call(str(size).encode()), digest=digest)
    finally:
        await chan.close()


async def _drain(messages: AsyncIterable[object]) -> None:
    async for _ in messages:
        pass


async def output_throughput(ctx: Context) -> list[Row]:
    """One client following a live job printing ``output_bytes``, vs the bare stream."""
    size = ctx.sizes.output_bytes
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(ctx.sizes.output_repeats):
        theirs.append(rate(await _bare(ctx, size, digest=False)))
        # A fresh server each time: see REPEAT_NOTE.
        async with ctx.jobmgr() as (_, stub):
            job = await stub.Start(head_job(size))
            got = await receive(stub.Output(pb.OutputRequest(uuid=job.uuid)), digest=False)
        if got.size != size:
            raise RuntimeError(f"the follower got {got.size} bytes of {size}")
        ours.append(rate(got))
    return [
        ratio_row(
            "output throughput", median(ours) / MB, "MB/s", median(theirs) / MB, at_least=0.7,
            note=f"{size // MiB} MiB, median of {len(ours)}, {REPEAT_NOTE}; "
            f"runs {_list(ours)} vs bare {_list(theirs)} MB/s",
        )
    ]  # fmt: skip


async def fan_out(ctx: Context) -> list[Row]:
    """Many followers of one live job; aggregate MB/s vs the bare stream to one client.

    Every reader, the baseline's too, hashes what it gets (sha256): the per-byte client work
    is the same on both sides, so the ratio compares the servers.
    """
    size, count = ctx.sizes.fanout_bytes, ctx.sizes.fanout_followers
    expected = hashlib.sha256(bytes(size)).hexdigest()
    ours: list[float] = []
    theirs: list[float] = []
    # The baseline streams at least BASELINE_MIN bytes: a shorter stream is over too soon
    # for its rate to mean much on a noisy machine.
    bare_size = max(size, BASELINE_MIN)
    bare_expected = hashlib.sha256(bytes(bare_size)).hexdigest()
    for _ in range(ctx.sizes.fanout_repeats):
        bare = await _bare(ctx, bare_size, digest=True)
        if bare.sha256 != bare_expected:
            raise RuntimeError("the bare stream's sha256 does not match")
        theirs.append(rate(bare))
        async with ctx.jobmgr() as (server, stub):  # fresh each time: see REPEAT_NOTE
            got = await _followers(server.target, ctx, stub, size, count)
        wrong = sum(1 for g in got if g.sha256 != expected or g.size != size)
        if wrong:
            raise RuntimeError(f"{wrong} of {count} copies differ (sha256 or size)")
        first = min(g.first_at for g in got)
        last = max(g.end_at for g in got)
        ours.append(count * size / (last - first))
    return [
        ratio_row(
            "fan-out aggregate", median(ours) / MB, "MB/s", median(theirs) / MB, at_least=0.7,
            note=f"{count} followers x {size // MiB} MiB, all sha256 equal, median of "
            f"{len(ours)}, {REPEAT_NOTE}; runs {_list(ours)} vs bare one client "
            f"{_list(theirs)} MB/s",
        )
    ]  # fmt: skip


async def _followers(
    target: str, ctx: Context, stub: pb_grpc.JobManagerStub, size: int, count: int
) -> list[Received]:
    """``count`` clients, each on its own warm connection, following one new live job."""
    channels = [channel(target, ctx.certs) for _ in range(count)]
    try:
        stubs = [pb_grpc.JobManagerStub(chan) for chan in channels]
        for follower in stubs:  # warm: connected, TLS done
            await follower.List(pb.ListRequest(state=pb.JOB_STATE_RUNNING))
        job = await stub.Start(head_job(size, pause=ATTACH_PAUSE))
        request = pb.OutputRequest(uuid=job.uuid)
        return list(await asyncio.gather(*(receive(s.Output(request), digest=True) for s in stubs)))
    finally:
        for chan in channels:
            await chan.close()


async def follow_latency(ctx: Context) -> list[Row]:
    """Time from a job printing a timestamped line to a follower having it, vs unary RTT."""
    async with ctx.jobmgr() as (_, stub):
        done = await stub.Start(pb.StartRequest(cmd="true"))
        await wait_ended(stub, done.uuid)
        job = await stub.Start(pb.StartRequest(cmd="python3", args=["-c", FOLLOW_JOB]))
        await asyncio.sleep(0.3)  # the interpreter is up and printing
        probe = pb.StatusRequest(uuid=done.uuid)
        rtts = []
        for _ in range(ctx.sizes.unary_samples):
            started = time.perf_counter()
            await stub.Status(probe)
            rtts.append(time.perf_counter() - started)
        try:
            delays = await _line_delays(stub, job.uuid, ctx.sizes.follow_samples)
        finally:
            await stub.Stop(pb.StopRequest(uuid=job.uuid))
    rtt = median(rtts) * 1000
    n = len(delays)
    return [
        ratio_row(
            "follow latency median", median(delays) * 1000, "ms", rtt, at_most=3,
            note=f"{n} lines, one per 10 ms; baseline: median of {len(rtts)} Status RPCs",
        ),
        ratio_row(
            "follow latency p99", percentile(delays, 99) * 1000, "ms", rtt, at_most=20,
            note="baseline: the same median unary round trip",
        ),
    ]  # fmt: skip


async def _line_delays(stub: pb_grpc.JobManagerStub, job_id: str, wanted: int) -> list[float]:
    attached = time.time_ns()
    delays: list[float] = []
    partial = b""
    call = stub.Output(pb.OutputRequest(uuid=job_id))
    async for message in call:
        now = time.time_ns()
        *lines, partial = (partial + message.output).split(b"\n")
        for line in lines:
            printed = int(line)
            if printed >= attached + FOLLOW_SKIP_NS:
                delays.append((now - printed) / 1e9)
        if len(delays) >= wanted:
            call.cancel()
            break
    return delays[:wanted]


async def flat_memory(ctx: Context) -> list[Row]:
    """jobmgr-server's RSS before, and after streaming ``flat_bytes`` to several clients."""
    size, count = ctx.sizes.flat_bytes, ctx.sizes.flat_clients
    async with ctx.jobmgr() as (server, stub):
        channels = [channel(server.target, ctx.certs) for _ in range(count)]
        try:
            stubs = [pb_grpc.JobManagerStub(chan) for chan in channels]
            # Warm every path once (a small job to every client), then take the baseline.
            warm = await stub.Start(head_job(MiB))
            for follower in stubs:
                await _drain(follower.Output(pb.OutputRequest(uuid=warm.uuid)))
            await asyncio.sleep(0.5)
            before = rss_bytes(server.pid)
            peak = before
            job = await stub.Start(head_job(size, pause=ATTACH_PAUSE))
            request = pb.OutputRequest(uuid=job.uuid)
            readers = asyncio.gather(*(receive(s.Output(request), digest=False) for s in stubs))
            while not readers.done():
                peak = max(peak, rss_bytes(server.pid))
                await asyncio.sleep(0.05)
            got = await readers
            if any(g.size != size for g in got):
                raise RuntimeError("a client got fewer bytes than the job printed")
            await asyncio.sleep(0.5)
            after = rss_bytes(server.pid)
        finally:
            for chan in channels:
                await chan.close()
    return [
        limit_row(
            "flat memory", (after - before) / MiB, "MiB", at_most=32,
            note=f"RSS {before / MiB:.0f} -> {after / MiB:.0f} MiB (peak {peak / MiB:.0f}) "
            f"after {size // MiB} MiB to {count} clients",
        )
    ]  # fmt: skip


def _list(rates: list[float]) -> str:
    return "/".join(f"{r / MB:.0f}" for r in rates)
