"""The servers under test: a real ``jobmgr-server`` and the bare grpcio baseline, as
subprocesses in a temporary directory, with certificates made by jobmgr's own PKI code.

Both listen on 127.0.0.1 only and speak mutual TLS 1.3 with the same CA and server
certificate; the client side is an in-process ``grpc.aio`` channel.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

# jobmgr.api before grpc: it makes this process refuse TLS 1.2, so every channel is TLS 1.3.
from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc
from jobmgr.pki import write_bundle

import grpc  # isort: skip

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # Each channel its own TCP connection, as separate clients would have.
    ("grpc.use_local_subchannel_pool", 1),
]
_REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"listening at (\S+):(\d+)")


class BenchError(RuntimeError):
    """A server did not start, or did not clean up after itself."""


def make_certs(directory: Path) -> Path:
    """A CA, a server certificate and client pairs, written by ``jobmgr.pki``."""
    write_bundle(directory)
    return directory


class _Subprocess:
    """A server program whose stdout says on which port it listens."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        self.name = name
        self._out = workdir / f"{name}.out"
        self._err = workdir / f"{name}.err"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir, env=env
            )
        self.port = self._wait_for_port()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            match = _LISTENING.search(self._out.read_bytes())
            if match:
                return int(match.group(2))
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.process.kill()
        self.process.wait()
        raise BenchError(f"{self.name} did not start: {self.stderr_tail()}")

    def stderr_tail(self, lines: int = 8) -> str:
        text = self._err.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def terminate(self) -> int:
        """SIGTERM, wait for it; SIGKILL if it does not go within STOP_TIMEOUT."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise BenchError(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT:.0f}s") from None
        return self.process.returncode


class JobmgrServer(_Subprocess):
    """``jobmgr-server`` as root, with its own state dir and cgroup parent."""

    def __init__(self, workdir: Path, certs: Path) -> None:
        self.cgroup_parent = f"jobmgr-bench-{uuid.uuid4().hex[:8]}"
        self.state_dir = workdir / f"state-{self.cgroup_parent}"
        super().__init__(
            "jobmgr-server",
            [
                *_program("jobmgr-server", "jobmgr.cli.server"),
                "--host", HOST,
                "--port", "0",
                "--ca", str(certs / "ca.pem"),
                "--cert", str(certs / "server.pem"),
                "--key", str(certs / "server.key"),
                "--state-dir", str(self.state_dir),
                "--cgroup-parent", self.cgroup_parent,
                "--grace", "2",
            ],
            workdir,
        )  # fmt: skip

    def cgroup_dirs(self) -> list[str]:
        """This server's cgroup parent in every hierarchy where it still exists."""
        return _cgroup_dirs(self.cgroup_parent)

    def job_cgroups(self, job_ids: Sequence[str]) -> list[str]:
        """Those of ``job_ids`` that still have a cgroup directory anywhere."""
        left = set()
        for parent in self.cgroup_dirs():
            names = set(os.listdir(parent))
            left |= names.intersection(job_ids)
        return sorted(left)

    def stop(self) -> None:
        """Stop it and check it left nothing behind; clears what it left, then raises."""
        code = self.terminate()
        leftovers = self.cgroup_dirs()
        for path in sorted(leftovers, key=len, reverse=True):
            _remove_cgroup_tree(path)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if code != 0:
            raise BenchError(f"jobmgr-server exited {code}: {self.stderr_tail()}")
        if leftovers:
            raise BenchError(f"jobmgr-server left cgroups behind: {leftovers}")


class BareServer(_Subprocess):
    """The baseline: ``bench._baseline``, a bare grpcio server-streaming RPC."""

    def __init__(self, workdir: Path, certs: Path) -> None:
        super().__init__(
            "bare-grpc",
            [sys.executable, "-m", "bench._baseline", "--host", HOST, "--certs", str(certs)],
            workdir,
        )

    def stop(self) -> None:
        self.terminate()


def channel(target: str, certs: Path, kind: str = "client_admin") -> grpc.aio.Channel:
    """A new mTLS channel (and TCP connection) presenting client certificate ``kind``."""
    credentials = channel_credentials(
        ca_pem=(certs / "ca.pem").read_bytes(),
        cert_pem=(certs / f"{kind}.pem").read_bytes(),
        key_pem=(certs / f"{kind}.key").read_bytes(),
    )
    return grpc.aio.secure_channel(target, credentials, options=CLIENT_OPTIONS)


async def warm_stub(
    target: str, certs: Path
) -> tuple[grpc.aio.Channel, job_pb2_grpc.JobManagerStub]:
    """A channel to jobmgr-server, connected and past its first RPCs."""
    chan = channel(target, certs)
    stub = job_pb2_grpc.JobManagerStub(chan)
    for _ in range(3):
        await stub.List(job_pb2.ListRequest(state=job_pb2.JOB_STATE_RUNNING))
    return chan, stub


def _program(script: str, module: str) -> list[str]:
    """The installed console script next to this interpreter, else ``python -m module``."""
    path = Path(sys.executable).parent / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def _cgroup_dirs(parent: str) -> list[str]:
    return glob.glob(f"/sys/fs/cgroup/*/{parent}") + glob.glob(f"/sys/fs/cgroup/{parent}")


def _remove_cgroup_tree(path: str) -> None:
    """Kill what is in a leftover cgroup tree and remove it, deepest first."""
    dirs = sorted((root for root, _, _ in os.walk(path)), key=len, reverse=True)
    for directory in dirs:
        try:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except OSError:
            pass
    deadline = time.monotonic() + 10
    for directory in dirs:
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
