"""What every row gets: sizes for this mode, certificates, and servers that clean up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from harness.server import ListeningProcess, ServerProcess
from jobmgr.api import job_pb2 as pb
from jobmgr.api import job_pb2_grpc as pb_grpc

from ._server import start_bare, start_jobmgr, stop_jobmgr, warm_stub

GiB = 1024**3
MiB = 1024**2
T = TypeVar("T")
R = TypeVar("R")

# Limits for the output rows: the defaults (1 CPU among them) would measure the limits.
UNLIMITED = pb.Limits(cpu=0, memory_bytes=0, io_read_bps=0, io_write_bps=0)
UNSHARE = ("unshare", "--fork", "--pid", "--mount-proc", "--net", "--mount", "--uts", "--ipc")


@dataclass(frozen=True)
class Sizes:
    """How much each row does; the full run's sizes are those bench/README.md states."""

    start_samples: int = 200
    throughput_starts: int = 500
    callers: int = 16
    output_bytes: int = GiB
    output_repeats: int = 3
    fanout_followers: int = 32
    fanout_bytes: int = 256 * MiB
    fanout_repeats: int = 3
    follow_samples: int = 1000
    unary_samples: int = 300
    scale_jobs: int = 1000
    status_samples: int = 300
    flat_bytes: int = GiB
    flat_clients: int = 4
    client_samples: int = 40


QUICK = Sizes(
    start_samples=40,
    throughput_starts=100,
    output_bytes=256 * MiB,
    output_repeats=1,
    fanout_bytes=32 * MiB,
    fanout_repeats=1,
    follow_samples=200,
    unary_samples=100,
    scale_jobs=200,
    status_samples=100,
    flat_bytes=256 * MiB,
    client_samples=10,
)


@dataclass
class Context:
    workdir: Path
    certs: Path
    sizes: Sizes
    cleanup_errors: list[str] = field(default_factory=list)
    _bare: ListeningProcess | None = None

    @contextlib.asynccontextmanager
    async def jobmgr(self) -> AsyncIterator[tuple[ServerProcess, pb_grpc.JobManagerStub]]:
        """A fresh jobmgr-server and a warm stub to it; stopped and checked afterwards."""
        server = await asyncio.to_thread(start_jobmgr, self.workdir, self.certs)
        try:
            chan, stub = await warm_stub(server.target, self.certs)
            try:
                yield server, stub
            finally:
                await chan.close()
        finally:
            try:
                await asyncio.to_thread(stop_jobmgr, server)
            except Exception as exc:
                self.cleanup_errors.append(str(exc))

    def bare(self) -> ListeningProcess:
        """The bare grpcio baseline server, started on first use."""
        if self._bare is None:
            self._bare = start_bare(self.workdir, self.certs)
        return self._bare

    def close(self) -> None:
        if self._bare is not None:
            self._bare.terminate()
            self._bare = None


async def bounded(
    items: Iterable[T], concurrency: int, work: Callable[[T], Awaitable[R]]
) -> list[R]:
    """``work`` on every item, at most ``concurrency`` at a time; results in item order."""
    todo = list(enumerate(items))
    results: dict[int, R] = {}

    async def worker() -> None:
        while todo:
            index, item = todo.pop(0)
            results[index] = await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [results[i] for i in range(len(results))]


async def wait_ended(stub: pb_grpc.JobManagerStub, job_id: str) -> int:
    """Follow a job's output until it ends (no polling); the number of bytes it printed."""
    total = 0
    async for message in stub.Output(pb.OutputRequest(uuid=job_id)):
        total += len(message.output)
    return total
