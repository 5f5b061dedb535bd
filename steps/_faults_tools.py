"""Instruments for the fault scenarios: a jobmgr-client follower, a health watcher, jobs whose
output follows from their argv, and the damage done to a state directory."""

from __future__ import annotations

# Before grpc: see fixtures_pki.
import jobmgr.api  # noqa: F401  # isort: skip

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.client import CLIENT_OPTIONS
from harness.programs import program, program_env
from harness.server import ServerProgram
from jobmgr.api import job_pb2

SERVICE = "job.JobManager"
LINES = "i=0; while [ $i -lt {count} ]; do echo line-$i; i=$((i+1)); sleep {every}; done"
FOREVER = "i=0; while :; do echo line-$i; i=$((i+1)); sleep {every}; done"


def lines(count: int) -> bytes:
    """What a LINES job of ``count`` lines prints."""
    return b"".join(b"line-%d\n" % i for i in range(count))


def consecutive_lines(output: bytes) -> bool:
    """Whether ``output`` is line-0, line-1, ... with none missing, each whole."""
    return output == lines(output.count(b"\n")) and output.endswith(b"\n")


def client_argv(server: ServerProgram, *args: str, kind: str = "admin") -> list[str]:
    return [*program("jobmgr-client"), *server.client_args(kind), *args]


def run_client(server: ServerProgram, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        client_argv(server, *args), capture_output=True, env=program_env(), timeout=60
    )


PRIMED = (
    "import sys\n"
    "from jobmgr.cli import client\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "sys.stdin.readline()\n"
    "sys.exit(client.main(sys.argv[1:]))\n"
)
READY = b"ready\n"


class PrimedClient:
    """jobmgr-client with its imports done, waiting for ``go``: its call then leaves within
    milliseconds, not the second or more a fresh interpreter takes on a loaded machine."""

    def __init__(self, server: ServerProgram, *args: str) -> None:
        argv = client_argv(server, *args)[len(program("jobmgr-client")) :]
        self.process = subprocess.Popen(
            [sys.executable, "-c", PRIMED, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=program_env(),
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == READY, "jobmgr-client did not start"

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"\n")
        self.process.stdin.flush()

    def result(self, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        stdout, stderr = self.process.communicate(timeout=timeout)
        code = self.process.returncode
        return subprocess.CompletedProcess(self.process.args, code, stdout, stderr)


class Follower:
    """``jobmgr-client output JOB``, its stdout collected as it comes."""

    def __init__(self, server: ServerProgram, job: str) -> None:
        self.process = subprocess.Popen(
            client_argv(server, "output", job),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=program_env(),
        )
        self.stdout = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self.stdout += chunk

    def wait_lines(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stdout.count(b"\n") < count:
            assert self.process.poll() is None, f"the follower ended: {self.finish()}"
            assert time.monotonic() < deadline, f"fewer than {count} lines came in time"
            time.sleep(0.005)

    def finish(self, timeout: float = 60.0) -> tuple[int, bytes, bytes]:
        """Its exit status, stdout and stderr, once it has exited."""
        code = self.process.wait(timeout)
        self._reader.join(10)
        assert self.process.stderr is not None
        return code, self.stdout, self.process.stderr.read()


@dataclass
class HealthWatcher:
    """Watches the server's health (grpc.health.v1 Watch) on a thread: (time, status) pairs."""

    server: ServerProgram
    seen: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        channel = grpc.secure_channel(
            self.server.target, self.server.credentials(), options=CLIENT_OPTIONS
        )
        self._channel = channel
        request = health_pb2.HealthCheckRequest(service=SERVICE)
        self._call = health_pb2_grpc.HealthStub(channel).Watch(request)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            for reply in self._call:
                self.seen.append((time.monotonic(), reply.status))
        except grpc.RpcError:
            pass

    def went_down_and_up(self, since: float) -> tuple[float, float] | None:
        """Seconds from ``since`` to the first NOT_SERVING, and to SERVING after it."""
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        down = next((t for t, s in self.seen if t >= since and s == not_serving), None)
        if down is None:
            return None
        up = next((t for t, s in self.seen if t >= down and s == serving), None)
        return None if up is None else (down - since, up - since)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(10)
        self._channel.close()


def signal_launcher(server: ServerProgram, signo: int) -> int:
    """Send ``signo`` to the state dir's launcher through a pidfd; its pid."""
    pid = server.launcher_pid()
    assert pid is not None, "no launcher is running"
    fd = os.pidfd_open(pid)
    try:
        assert server.launcher_pid() == pid, "the launcher changed under us"
        signal.pidfd_send_signal(fd, signo)
    finally:
        os.close(fd)
    return pid


def damage_head(log: Path, data: bytes) -> None:
    """Overwrite the first bytes of a log."""
    fd = os.open(log, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def cut_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def start_raw(
    server: ServerProgram, argv: list[str], request_id: str = "", timeout: float = 30.0
) -> str:
    """Start a job with a StartRequest whose field 11 (request_id) is added as raw bytes, so
    that a server built before the field existed gets the very same bytes."""
    request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:]).SerializeToString()
    if request_id:
        encoded = request_id.encode()
        request += b"\x5a" + bytes([len(encoded)]) + encoded  # field 11, length-delimited
    reply = server.raw_method("Start")(request, timeout=timeout)
    return job_pb2.StartResponse.FromString(reply).uuid
