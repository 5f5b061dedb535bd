"""Real servers for the service scenarios, one per scenario, torn down after it.

``job_server``: an in-process ``grpc.aio`` server on a free port, its event loop in a thread
of its own, over a Worker with its own state dir and cgroup parent.
``server_process``: the real ``jobmgr-server`` program as a subprocess, for the CLI.
Teardown checks the worker's launcher and cgroups are gone, and the program exited 0.
"""

from __future__ import annotations

# Before grpc: see fixtures_pki, which conftest loads first and which does the same.
import jobmgr.api  # noqa: F401  # isort: skip

import asyncio
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from jobmgr.api import JobServer, ServerTLS, channel_credentials, job_pb2_grpc, tls13_floor_active
from jobmgr.worker import Worker

from ._leftovers import clear_launcher, launcher_pid, unmount
from .fixtures_pki import ScenarioPKI

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 4 * 1024 * 1024)]


def cgroup_dirs(parent: str) -> list[str]:
    """Directories of this cgroup parent in any mounted hierarchy."""
    return glob.glob(f"/sys/fs/cgroup/*/{parent}") + glob.glob(f"/sys/fs/cgroup/{parent}")


@pytest.fixture
def server_cgroup_parent(worker_id: str) -> str:
    return f"jobmgr-test-{worker_id}-{uuid.uuid4().hex[:8]}"


# ---- in-process server ------------------------------------------------------------------------


@dataclass
class RunningServer:
    """An in-process server and what a client needs to reach it."""

    port: int
    pki: ScenarioPKI
    worker: Worker
    host: str = "localhost"
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def channel(self, kind: str = "admin", *, ca_path: Path | None = None) -> grpc.Channel:
        """A channel presenting the client certificate ``kind`` (see fixtures_pki)."""
        pair = self.pki.client(kind)
        credentials = channel_credentials(
            ca_pem=(ca_path or self.pki.ca_path).read_bytes(),
            cert_pem=pair.cert_pem,
            key_pem=pair.key_pem,
        )
        return self._keep(grpc.secure_channel(self.target, credentials, options=CLIENT_OPTIONS))

    def channel_without_certificate(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(root_certificates=self.pki.ca_pem)
        return self._keep(grpc.secure_channel(self.target, credentials, options=CLIENT_OPTIONS))

    def stub(self, kind: str = "admin") -> job_pb2_grpc.JobManagerStub:
        return job_pb2_grpc.JobManagerStub(self.channel(kind))

    def _keep(self, channel: grpc.Channel) -> grpc.Channel:
        self._channels.append(channel)
        return channel

    def close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


class _ServerThread:
    """Runs a JobServer on an event loop in a background thread."""

    def __init__(self, server: JobServer) -> None:
        self._server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jobmgr-test-server", daemon=True
        )

    def start(self) -> int:
        self._thread.start()
        port: int = self._call(self._server.start())
        return port

    def stop(self) -> None:
        try:
            self._call(self._server.stop(0))
            self._call(self._loop.shutdown_asyncgens())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(START_TIMEOUT)


@pytest.fixture
def job_server(
    tmp_path: Path, scenario_pki: ScenarioPKI, server_cgroup_parent: str
) -> Iterator[RunningServer]:
    """A real server on a free port, with the scenario's certificates."""
    assert tls13_floor_active(), "grpc was imported before jobmgr.api: TLS 1.2 is not refused"
    worker = Worker(tmp_path / "state", cgroup_parent=server_cgroup_parent, default_grace=2.0)
    launcher = worker._launcher.process
    tls = ServerTLS(scenario_pki.ca_pem, scenario_pki.server.cert_pem, scenario_pki.server.key_pem)
    thread = _ServerThread(JobServer(worker, tls, host="localhost", port=0))
    running: RunningServer | None = None
    try:
        running = RunningServer(port=thread.start(), pki=scenario_pki, worker=worker)
        yield running
    finally:
        if running is not None:
            running.close_channels()
        try:
            thread.stop()
        finally:
            worker.close()
    assert launcher is None or launcher.poll() is not None, "the launcher outlived the server"
    assert cgroup_dirs(server_cgroup_parent) == [], "job cgroups outlived the server"


# ---- jobmgr-server subprocess -----------------------------------------------------------------


def program(name: str) -> list[str]:
    """How to run one of our console scripts: installed next to python, else via -m."""
    script = shutil.which(name, path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-m", f"jobmgr.cli.{name.removeprefix('jobmgr-')}"]


def program_env() -> dict[str, str]:
    """The environment for our programs: importable from the checkout, and without the TLS
    setting this test process made, so each program must make it itself."""
    env = dict(os.environ)
    env.pop("GRPC_SSL_CIPHER_SUITES", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class ServerProcess:
    """A running ``jobmgr-server`` and the files a client needs to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    pki: ScenarioPKI
    state_dir: Path
    cgroup_parent: str
    stderr_path: Path

    def client_args(self, kind: str = "admin") -> list[str]:
        """Global jobmgr-client flags to reach this server with client certificate ``kind``."""
        pair = self.pki.client(kind)
        return [
            "--host", "localhost", "--port", str(self.port), "--ca", str(self.pki.ca_path),
            "--cert", str(pair.cert_path), "--key", str(pair.key_path),
        ]  # fmt: skip

    def channel(self, kind: str = "admin") -> grpc.Channel:
        """A channel to this server presenting client certificate ``kind``; close it after."""
        pair = self.pki.client(kind)
        credentials = channel_credentials(
            ca_pem=self.pki.ca_pem, cert_pem=pair.cert_pem, key_pem=pair.key_pem
        )
        target = f"localhost:{self.port}"
        return grpc.secure_channel(target, credentials, options=CLIENT_OPTIONS)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def crash(self) -> None:
        """kill -9 the server, as a crash would; its launcher and jobs live on."""
        self.process.kill()
        self.process.wait(10)

    @property
    def launcher_pid(self) -> int | None:
        """The pid of the state dir's launcher, if one is running."""
        return launcher_pid(self.state_dir)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


LISTENING = re.compile(rb"^server listening at (\S+):(\d+)$")


@dataclass(frozen=True)
class ServerFiles:
    """The TLS files a jobmgr-server is started with."""

    ca: Path
    cert: Path
    key: Path


StartServerProcess = Callable[..., ServerProcess]


@pytest.fixture
def start_server_process(
    tmp_path: Path, scenario_pki: ScenarioPKI, server_cgroup_parent: str
) -> Iterator[StartServerProcess]:
    """Starts ``jobmgr-server --port 0``, one at a time, all on the scenario's state dir (so a
    scenario may crash one and start the next on the same jobs). After the scenario: SIGTERM,
    each must exit 0; then no launcher may be left running, no cgroup left, and the state
    dir's tmpfs (if the scenario asked for one) is unmounted."""
    started: list[ServerProcess] = []
    state_dir = tmp_path / "server-state"
    mounts: list[Path] = []

    def start(
        files: ServerFiles | None = None,
        *extra_args: str,
        config: str | None = None,
        state_tmpfs_bytes: int | None = None,
    ) -> ServerProcess:
        assert all(s.process.poll() is not None for s in started), "one jobmgr-server at a time"
        files = files or ServerFiles(
            scenario_pki.ca_path, scenario_pki.server.cert_path, scenario_pki.server.key_path
        )
        if state_tmpfs_bytes is not None and not mounts:
            state_dir.mkdir(mode=0o700)
            options = f"size={state_tmpfs_bytes},mode=0700"
            mount = ["mount", "-t", "tmpfs", "-o", options, "jobmgr-test", str(state_dir)]
            subprocess.run(mount, check=True, capture_output=True)
            mounts.append(state_dir)
        config_args: list[str] = []
        if config is not None:
            config_path = tmp_path / f"jobmgr-{len(started)}.toml"
            config_path.write_text(config)
            config_args = ["--config", str(config_path)]
        stderr_path = tmp_path / (
            "server.stderr" if not started else f"server-{len(started)}.stderr"
        )
        argv = [
            *program("jobmgr-server"), *config_args, "--host", "localhost", "--port", "0",
            "--ca", str(files.ca), "--cert", str(files.cert), "--key", str(files.key),
            "--state-dir", str(state_dir), "--cgroup-parent", server_cgroup_parent,
            "--grace", "2", *extra_args,
        ]  # fmt: skip
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=stderr, env=program_env(), cwd=tmp_path
            )
        running = ServerProcess(
            process, 0, scenario_pki, state_dir, server_cgroup_parent, stderr_path
        )
        started.append(running)
        running.port = _await_listening(process, stderr_path)
        return running

    yield start
    failures = []
    try:
        for running in started:
            still_running = running.process.poll() is None
            returncode = _stop(running.process)
            if still_running and returncode != 0:
                failures.append(f"jobmgr-server exited {returncode}: {running.stderr}")
    finally:
        if clear_launcher(state_dir, server_cgroup_parent):
            failures.append("a launcher outlived jobmgr-server")
        for mount in mounts:
            unmount(mount)
    assert not failures, failures
    assert cgroup_dirs(server_cgroup_parent) == [], "job cgroups outlived jobmgr-server"


@pytest.fixture
def server_process(start_server_process: StartServerProcess) -> ServerProcess:
    """``jobmgr-server`` with the scenario's certificates."""
    return start_server_process()


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    finally:
        assert process.stdout is not None
        process.stdout.close()


def _await_listening(process: subprocess.Popen[bytes], stderr_path: Path) -> int:
    assert process.stdout is not None
    line = _readline_within(process, START_TIMEOUT)
    match = LISTENING.match(line.strip())
    if match is None:
        process.kill()
        process.wait()
        raise AssertionError(
            f"jobmgr-server did not start: stdout {line!r}, stderr {stderr_path.read_text()!r}"
        )
    return int(match.group(2))


def _readline_within(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The program's first line of stdout; empty if it exits or says nothing in time."""
    result: list[bytes] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


def run_program(
    name: str,
    *args: str,
    timeout: float = 60.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one of our programs to completion, capturing its stdout and stderr as bytes;
    ``env`` adds variables to its environment."""
    return subprocess.run(
        [*program(name), *args],
        capture_output=True,
        env={**program_env(), **(env or {})},
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
