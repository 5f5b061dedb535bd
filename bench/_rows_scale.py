"""Scale: many sleeping jobs at once, what each costs, and how fast they all go away."""

from __future__ import annotations

import asyncio
import random
import time

from jobmgr.api import job_pb2 as pb
from jobmgr.api import job_pb2_grpc as pb_grpc

from ._context import Context, bounded
from ._procs import helpers_pss
from ._stats import MiB, Row, limit_row, median, ratio_row

SLEEP = pb.StartRequest(cmd="sleep", args=["600"])
STOP_DEADLINE = 30.0
STOP_CALLERS = 64
SETTLE = 1.0  # for warm slots to be made before memory is read


async def status_latency(stub: pb_grpc.JobManagerStub, ids: list[str], samples: int) -> float:
    """Median round trip of Status on randomly chosen jobs, one call at a time."""
    rng = random.Random(5)
    times = []
    for _ in range(samples):
        request = pb.StatusRequest(uuid=rng.choice(ids))
        started = time.perf_counter()
        await stub.Status(request)
        times.append(time.perf_counter() - started)
    return median(times)


async def scale(ctx: Context) -> list[Row]:
    count, callers = ctx.sizes.scale_jobs, ctx.sizes.callers
    async with ctx.jobmgr() as (server, stub):
        await asyncio.sleep(SETTLE)
        idle_pss, idle_tree = helpers_pss(server.pid)
        first = (await stub.Start(SLEEP)).uuid
        quiet = await status_latency(stub, [first], ctx.sizes.status_samples)

        started = time.perf_counter()
        rest = await bounded(range(count - 1), callers, lambda _: stub.Start(SLEEP))
        start_time = time.perf_counter() - started
        ids = [first, *(reply.uuid for reply in rest)]
        listed = await stub.List(pb.ListRequest(state=pb.JOB_STATE_RUNNING))
        running = len({job.uuid for job in listed.jobs} & set(ids))

        loaded = await status_latency(stub, ids, ctx.sizes.status_samples)
        await asyncio.sleep(SETTLE)
        loaded_pss, tree = helpers_pss(server.pid)
        per_job = (loaded_pss - idle_pss) / count

        started = time.perf_counter()
        replies = await bounded(
            ids, STOP_CALLERS, lambda job_id: stub.Stop(pb.StopRequest(uuid=job_id))
        )
        stopped = sum(1 for r in replies if r.job.state == pb.JOB_STATE_STOPPED)
        while server.job_cgroups() & set(ids) and time.perf_counter() - started < STOP_DEADLINE * 2:
            await asyncio.sleep(0.05)
        stop_time = time.perf_counter() - started
        left = len(server.job_cgroups() & set(ids))
    all_gone = stopped == count and left == 0
    return [
        Row(
            "scale: jobs running", running, "jobs", None, None, f"= {count}", running == count,
            note=f"{count} `sleep 600` started from {callers} callers in {start_time:.1f}s "
            f"({count / start_time:.0f} jobs/s)",
        ),
        ratio_row(
            "scale: Status latency", loaded * 1000, "ms", quiet * 1000, at_most=1.5,
            note=f"median of {ctx.sizes.status_samples} with {count} running vs with one",
        ),
        limit_row(
            "scale: memory per job", per_job / MiB, "MiB", at_most=1,
            note=f"PSS of server+launcher+inits {idle_pss / MiB:.0f} -> {loaded_pss / MiB:.0f} "
            f"MiB; {len(idle_tree.inits)} -> {len(tree.inits)} launcher children, "
            f"{len(tree.commands)} job commands left out",
        ),
        Row(
            "scale: stop all", stop_time, "s", None, None, f"<= {STOP_DEADLINE:g} s, all gone",
            stop_time <= STOP_DEADLINE and all_gone,
            note=f"{stopped} of {count} STOPPED, {left} cgroups left; {STOP_CALLERS} callers",
        ),
    ]  # fmt: skip
