"""Watching the server from a bystander's seat while something hostile happens.

``Neighbour``: a job of its own printing a numbered line every 0.1 s, a client following its
output and another asking for its status every 0.1 s, each on its own connection; afterwards
it says how long the longest silence in the output was and how slow the slowest answer.
``MemoryWatch``: samples a process's resident memory until stopped.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import grpc

from harness.procs import usage
from harness.server import ServerProgram
from harness.speed import scaled
from jobmgr.api import job_pb2, job_pb2_grpc

TICK = 0.1


@dataclass
class Calm:
    """How the bystander fared over a stretch of time."""

    lines: int
    longest_silence: float
    slowest_status: float
    statuses: int
    errors: list[str] = field(default_factory=list)


class Neighbour:
    """A well-behaved job and two clients of it, running in the background."""

    def __init__(self, server: ServerProgram) -> None:
        self._server = server
        script = f"i=0; while :; do echo line-$i; i=$((i+1)); sleep {TICK}; done"
        self.job = server.start_job(server.marked(script))
        self._lines: list[float] = []
        self._statuses: list[tuple[float, float]] = []
        self._errors: list[str] = []
        self._stopping = threading.Event()
        self._channel = server.channel()
        stub = job_pb2_grpc.JobManagerStub(self._channel)
        self._stream = stub.Output(job_pb2.OutputRequest(uuid=self.job))
        self._threads = [
            threading.Thread(target=self._follow, daemon=True),
            threading.Thread(target=self._ping, args=(server.stub(),), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + scaled(10)
        while not self._lines and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self._lines, "the neighbour job printed nothing"

    def _follow(self) -> None:
        buffered = b""
        try:
            for message in self._stream:
                buffered += message.output
                while b"\n" in buffered:
                    _, buffered = buffered.split(b"\n", 1)
                    self._lines.append(time.monotonic())
        except grpc.RpcError as exc:
            if not self._stopping.is_set():
                self._errors.append(f"output stream: {exc.code().name} {exc.details()}")

    def _ping(self, stub: job_pb2_grpc.JobManagerStub) -> None:
        request = job_pb2.StatusRequest(uuid=self.job)
        while not self._stopping.wait(TICK):
            began = time.monotonic()
            try:
                stub.Status(request, timeout=30)
            except grpc.RpcError as exc:
                if not self._stopping.is_set():
                    self._errors.append(f"status: {exc.code().name} {exc.details()}")
                continue
            self._statuses.append((began, time.monotonic() - began))

    def calm_since(self, since: float) -> Calm:
        """How it went from ``since`` (a time.monotonic()) until now."""
        now = time.monotonic()
        lines = [t for t in self._lines if t >= since]
        marks = [since, *lines, now]
        silence = max(b - a for a, b in itertools.pairwise(marks))
        statuses = [took for began, took in self._statuses if began >= since]
        return Calm(len(lines), silence, max(statuses, default=0.0), len(statuses), self._errors)

    def close(self) -> None:
        self._stopping.set()
        self._stream.cancel()
        for thread in self._threads:
            thread.join(10)
        self._channel.close()


class MemoryWatch:
    """Samples the resident memory of ``pid`` every 50 ms in the background."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.baseline = usage(pid).rss_bytes
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, usage(self._pid).rss_bytes)
            except FileNotFoundError:
                return

    def stop(self) -> int:
        """Stop sampling; the growth over the baseline, in bytes."""
        self._stop.set()
        self._thread.join(5)
        return self.peak - self.baseline
