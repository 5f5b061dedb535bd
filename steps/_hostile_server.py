"""The real ``jobmgr-server`` program under hostile conditions: started with our own flags,
killed with SIGKILL and started again on the same state, measured from outside, and checked
after each scenario for anything left behind (process, cgroup, launcher, mount).

Every job a hostile scenario starts carries the scenario's ``marker`` in its argv, so that
``marked_processes`` finds whatever of it survives anywhere on the host.
"""

from __future__ import annotations

# Before grpc: see fixtures_pki.
import jobmgr.api  # noqa: F401  # isort: skip

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from ._grpc_steps import eventually
from .fixtures_pki import ScenarioPKI
from .fixtures_server import LISTENING, cgroup_dirs, program, program_env

START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
CALL_TIMEOUT = 30.0
CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class Usage:
    """What a process holds, read from /proc."""

    fds: int
    threads: int
    rss_bytes: int


def usage(pid: int) -> Usage:
    """Open fds, threads and resident memory of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return Usage(
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=len(os.listdir(f"/proc/{pid}/task")),
        rss_bytes=rss,
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def marked_processes(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker``."""
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


@dataclass
class HostileServer:
    """One ``jobmgr-server`` program, restartable on the same state dir and cgroup parent."""

    pki: ScenarioPKI
    workdir: Path
    cgroup_parent: str
    marker: str
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    _channels: list[grpc.Channel] = field(default_factory=list)
    _stubs: dict[str, job_pb2_grpc.JobManagerStub] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "server.stderr"

    @property
    def stderr(self) -> str:
        """Everything every run of the server wrote to stderr (its log)."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.poll() is None, "the server is not up"
        return self.process.pid

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"

    def argv(self, *extra: str) -> list[str]:
        return [
            *program("jobmgr-server"), "--host", "localhost", "--port", "0",
            "--ca", str(self.pki.ca_path), "--cert", str(self.pki.server.cert_path),
            "--key", str(self.pki.server.key_path), "--state-dir", str(self.state_dir),
            "--cgroup-parent", self.cgroup_parent, "--grace", "2", *self.args, *extra,
        ]  # fmt: skip

    def start(self) -> None:
        """Start the program (again) and wait for its ``server listening`` line."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.close_channels()
        with self.stderr_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                self.argv(), stdout=subprocess.PIPE, stderr=stderr, env=program_env(),
                cwd=self.workdir,
            )  # fmt: skip
        self.starts += 1
        line = _first_line(self.process, START_TIMEOUT)
        match = LISTENING.match(line.strip())
        if match is None:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"jobmgr-server did not start: {line!r}\n{self.stderr[-3000:]}")
        self.port = int(match.group(2))

    def kill9(self) -> None:
        """SIGKILL the server process, as a crash would; its launcher and jobs go on."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._close_stdout()
        self.close_channels()

    def terminate(self) -> int:
        """SIGTERM: the server stops its jobs and exits; returns its exit status."""
        self.close_channels()
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        finally:
            self._close_stdout()

    def assert_up(self) -> None:
        """Fail, saying how it ended, if the server process has died."""
        assert self.process is not None, "the server was never started"
        code = self.process.poll()
        if code is not None:
            how = f"signal {-code}" if code < 0 else f"status {code}"
            raise AssertionError(
                f"jobmgr-server died ({how}); its log ends:\n{self.stderr[-3000:]}"
            )

    def launcher_pid(self) -> int | None:
        """The state dir's launcher, if one is running."""
        try:
            pid = int((self.state_dir / "launcher.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if alive(pid) else None

    def job_cgroups(self) -> set[str]:
        """Names of the cgroups under this server's parent, in any hierarchy."""
        names: set[str] = set()
        for parent in cgroup_dirs(self.cgroup_parent):
            try:
                names.update(e.name for e in os.scandir(parent) if e.is_dir())
            except FileNotFoundError:
                pass
        return names

    # ---- clients ------------------------------------------------------------------------------

    def credentials(self, kind: str = "admin") -> grpc.ChannelCredentials:
        pair = self.pki.client(kind)
        return channel_credentials(
            ca_pem=self.pki.ca_pem, cert_pem=pair.cert_pem, key_pem=pair.key_pem
        )

    def channel(self, kind: str = "admin") -> grpc.Channel:
        """A channel presenting the client certificate ``kind``, closed with the scenario."""
        self.assert_up()
        channel = grpc.secure_channel(self.target, self.credentials(kind), options=CLIENT_OPTIONS)
        self._channels.append(channel)
        return channel

    def stub(self, kind: str = "admin") -> job_pb2_grpc.JobManagerStub:
        """A stub on one shared channel per certificate kind, until the server stops. (A
        channel per call kept thousands of connections open through a long scenario.)"""
        self.assert_up()
        if kind not in self._stubs:
            self._stubs[kind] = job_pb2_grpc.JobManagerStub(self.channel(kind))
        return self._stubs[kind]

    def close_channels(self) -> None:
        self._stubs.clear()
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    # ---- jobs ---------------------------------------------------------------------------------

    def marked(self, script: str) -> list[str]:
        """argv running ``script`` with sh, the marker as its $0."""
        return ["sh", "-c", script, self.marker]

    def start_job(
        self, argv: Sequence[str], limits: job_pb2.Limits | None = None, kind: str = "admin"
    ) -> str:
        request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:], limits=limits)
        return str(self.stub(kind).Start(request, timeout=CALL_TIMEOUT).uuid)

    def status(self, job_id: str) -> job_pb2.StatusResponse:
        request = job_pb2.StatusRequest(uuid=job_id)
        status: job_pb2.StatusResponse = self.stub().Status(request, timeout=CALL_TIMEOUT)
        return status

    def output(self, job_id: str, *, follow: bool = True, timeout: float = 60.0) -> bytes:
        """The job's stdout and stderr bytes, in order (to its end when following)."""
        request = job_pb2.OutputRequest(uuid=job_id, no_follow=not follow)
        return b"".join(m.output for m in self.stub().Output(request, timeout=timeout))

    def wait_ended(self, job_id: str, timeout: float = 60.0) -> job_pb2.StatusResponse:
        self.output(job_id, timeout=timeout)
        status = self.status(job_id)
        assert status.state != job_pb2.JOB_STATE_RUNNING, f"the output ended, not the job: {status}"
        return status

    def list_ids(self) -> list[str]:
        reply = self.stub().List(job_pb2.ListRequest(), timeout=CALL_TIMEOUT)
        return [job.uuid for job in reply.jobs]

    def _close_stdout(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


def _first_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    result: list[bytes] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


LaunchServer = Callable[..., HostileServer]


@pytest.fixture
def scenario_marker() -> str:
    """A word only this scenario's jobs carry in their argv."""
    return f"h5mark-{uuid.uuid4().hex}"


@pytest.fixture
def launch_server(
    tmp_path: Path, scenario_pki: ScenarioPKI, server_cgroup_parent: str, scenario_marker: str
) -> Iterator[LaunchServer]:
    """Starts ``jobmgr-server`` with extra flags; after the scenario stops it by SIGTERM (or
    its orphaned launcher, after a SIGKILL) and checks nothing of it is left anywhere."""
    servers: list[HostileServer] = []

    def launch(*args: str) -> HostileServer:
        workdir = tmp_path / f"server{len(servers)}"
        workdir.mkdir()
        server = HostileServer(
            scenario_pki, workdir, f"{server_cgroup_parent}-{len(servers)}", scenario_marker,
            list(args),
        )  # fmt: skip
        servers.append(server)
        server.start()
        return server

    yield launch
    problems = []
    for server in servers:
        problems += _shut_down(server)
    assert not problems, "\n".join(problems)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts, f"a mount under {tmp_path} was left behind"


def _shut_down(server: HostileServer) -> list[str]:
    """Stop the server (or its launcher), then list whatever it left behind."""
    problems = []
    launcher = server.launcher_pid()
    if server.process is not None and server.process.poll() is None:
        code = server.terminate()
        if code != 0:
            problems.append(f"jobmgr-server exited {code}: {server.stderr[-2000:]}")
    if launcher is not None:
        if server.process is not None and server.process.returncode == 0:
            try:
                eventually(lambda: not alive(launcher), 15.0, "the launcher to exit")
            except AssertionError as exc:
                problems.append(str(exc))
        if alive(launcher):
            # What a crashed server leaves: its launcher, to be shut down (it stops the jobs).
            try:
                os.kill(launcher, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for what, check in (
        ("the launcher to exit", lambda: launcher is None or not alive(launcher)),
        ("the job cgroups to go", lambda: not cgroup_dirs(server.cgroup_parent)),
        ("the jobs' processes to go", lambda: not marked_processes(server.marker)),
    ):
        try:
            eventually(check, 15.0, what)
        except AssertionError as exc:
            problems.append(f"{exc} (cgroup parent {server.cgroup_parent})")
    if problems:
        _force_clean(server)
    return problems


def _force_clean(server: HostileServer) -> None:
    """After a failure: kill what is left, so one scenario's leak does not spoil the next."""
    for pid in marked_processes(server.marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for parent in cgroup_dirs(server.cgroup_parent):
        for child in Path(parent).iterdir():
            if child.is_dir():
                for word in (child / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(word), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        time.sleep(0.2)
        for child in Path(parent).iterdir():
            if child.is_dir():
                try:
                    child.rmdir()
                except OSError:
                    pass
        try:
            Path(parent).rmdir()
        except OSError:
            pass
