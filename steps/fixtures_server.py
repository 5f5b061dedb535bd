"""Real servers for the service scenarios, torn down after each scenario and checked for what
they left behind.

``job_server``: an in-process ``grpc.aio`` server on a free port, over a Worker with its own
state dir and cgroup parent.
``launch_server``: the real ``jobmgr-server`` program, as many as a scenario asks for, each
restartable on its own state dir; ``server_process`` is the first, with the scenario's
certificates and no extra flags.
"""

from __future__ import annotations

# Before grpc: see fixtures_pki, which conftest loads first and which does the same.
import jobmgr.api  # noqa: F401  # isort: skip

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.cgroups import parent_dirs
from harness.inprocess import RunningServer, ServerThread
from harness.leftovers import unmount
from harness.pki import ScenarioPKI, ServerFiles
from harness.server import ServerProgram, Started
from jobmgr.api import JobServer, ServerTLS, tls13_floor_active
from jobmgr.worker import Worker


@pytest.fixture
def server_cgroup_parent(worker_id: str) -> str:
    return f"jobmgr-test-{worker_id}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def scenario_marker() -> str:
    """A word only this scenario's jobs carry in their argv (see ServerProgram.marked)."""
    return f"jobmgr-test-mark-{uuid.uuid4().hex}"


# ---- in-process server ------------------------------------------------------------------------


@pytest.fixture
def job_server(
    tmp_path: Path, scenario_pki: ScenarioPKI, server_cgroup_parent: str
) -> Iterator[RunningServer]:
    """A real server on a free port, with the scenario's certificates."""
    assert tls13_floor_active(), "grpc was imported before jobmgr.api: TLS 1.2 is not refused"
    worker = Worker(tmp_path / "state", cgroup_parent=server_cgroup_parent, default_grace=2.0)
    launcher = worker._launcher.process
    tls = ServerTLS(scenario_pki.ca_pem, scenario_pki.server.cert_pem, scenario_pki.server.key_pem)
    thread = ServerThread(JobServer(worker, tls, host="localhost", port=0))
    running: RunningServer | None = None
    try:
        running = RunningServer(thread.start(), scenario_pki, worker)
        yield running
    finally:
        if running is not None:
            running.close_channels()
        try:
            thread.stop()
        finally:
            worker.close()
    assert launcher is None or launcher.poll() is not None, "the launcher outlived the server"
    assert parent_dirs(server_cgroup_parent) == [], "job cgroups outlived the server"


# ---- jobmgr-server programs -------------------------------------------------------------------


LaunchServer = Callable[..., ServerProgram]


@pytest.fixture
def launch_server(
    tmp_path: Path, scenario_pki: ScenarioPKI, server_cgroup_parent: str, scenario_marker: str
) -> Iterator[LaunchServer]:
    """Starts ``jobmgr-server`` with extra flags: ``launch(*flags, files=None, config=None,
    state_dir="state", state_tmpfs_bytes=None, workdir_mode=None, nofile=None, start=True)``.
    Each gets a directory of its own (its working directory: state dir, log, config file) and
    its own cgroup parent; ``files`` are its TLS files (the scenario's by default); ``config``
    the text of a --config file; ``state_dir`` the state dir's path within that directory;
    ``state_tmpfs_bytes`` puts its state dir on a tmpfs of that size.
    ``workdir_mode`` puts its directory, of that mode, under a directory in /tmp that every
    user may enter (tmp_path is root's alone), for scenarios about what a job running as
    nobody can reach; ``nofile`` (soft, hard) runs it under that RLIMIT_NOFILE; ``start=False``
    leaves starting it to the scenario. After the scenario each is stopped by SIGTERM (or,
    after a crash, its launcher is), must have exited 0, and nothing of it may be left
    anywhere: no launcher, cgroup, job process, mount or directory in /tmp."""
    servers = Started()
    mounts: list[Path] = []
    reachable: list[Path] = []

    def launch(
        *flags: str,
        files: ServerFiles | None = None,
        config: str | None = None,
        state_dir: str = "state",
        state_tmpfs_bytes: int | None = None,
        workdir_mode: int | None = None,
        nofile: tuple[int, int] | None = None,
        start: bool = True,
    ) -> ServerProgram:
        if workdir_mode is None:
            workdir = tmp_path / f"server{len(servers)}"
            workdir.mkdir()
        else:
            if not reachable:
                reachable.append(Path(tempfile.mkdtemp(prefix="jobmgr-test-", dir="/tmp")))
                reachable[0].chmod(0o755)
            workdir = reachable[0] / f"server{len(servers)}"
            workdir.mkdir()
            workdir.chmod(workdir_mode)
        wrapper = [] if nofile is None else ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--"]
        server = ServerProgram(
            scenario_pki, files or scenario_pki.server_files(), workdir,
            f"{server_cgroup_parent}-{len(servers)}", *flags, marker=scenario_marker,
            config=config, wrapper=wrapper, state_dir=workdir / state_dir,
        )  # fmt: skip
        servers.append(server)
        if state_tmpfs_bytes is not None:
            server.state_dir.mkdir(mode=0o700)
            options = f"size={state_tmpfs_bytes},mode=0700"
            mount = ["mount", "-t", "tmpfs", "-o", options, "jobmgr-test", str(server.state_dir)]
            subprocess.run(mount, check=True, capture_output=True)
            mounts.append(server.state_dir)
        if start:
            server.start()
        return server

    yield launch
    try:
        servers.shut_down()
    finally:
        for mount in mounts:
            unmount(mount)
        for directory in reachable:
            shutil.rmtree(directory, ignore_errors=True)
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mountinfo, f"a mount under {tmp_path} was left behind"


@pytest.fixture
def server_process(launch_server: LaunchServer) -> ServerProgram:
    """``jobmgr-server`` with the scenario's certificates."""
    return launch_server()
