"""``jobmgr-server`` started as some hardening scenarios need it: from a directory every user
may reach (or write to), under a file descriptor limit of the scenario's choosing, or not
started at all but tried, for a refusal. Torn down and checked like ``launch_server``'s."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ._hostile_server import HostileServer, _shut_down
from .fixtures_pki import ScenarioPKI
from .fixtures_server import program_env

TRY_TIMEOUT = 30.0


@dataclass
class ExposedServer(HostileServer):
    """A HostileServer whose argv may be run through a wrapper (``prlimit ...``)."""

    wrapper: list[str] = field(default_factory=list)

    def argv(self, *extra: str) -> list[str]:
        return [*self.wrapper, *super().argv(*extra)]

    def try_start(self) -> subprocess.CompletedProcess[str]:
        """Run the program expecting it to refuse: its exit status and output."""
        return subprocess.run(
            self.argv(),
            capture_output=True,
            text=True,
            env=program_env(),
            cwd=self.workdir,
            timeout=TRY_TIMEOUT,
            check=False,
        )


LaunchExposed = Callable[..., ExposedServer]


@pytest.fixture
def exposed_root() -> Iterator[Path]:
    """A fresh directory in /tmp that every user may enter (0755), removed afterwards: the
    scenario's own tmp_path is root's alone, and these scenarios are about what a job
    running as nobody can reach."""
    root = Path(tempfile.mkdtemp(prefix="jobmgr-hardening-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def launch_exposed(
    exposed_root: Path,
    scenario_pki: ScenarioPKI,
    server_cgroup_parent: str,
    scenario_marker: str,
) -> Iterator[LaunchExposed]:
    """``launch(*flags, workdir_mode=0o755, nofile=None, start=True)``: a server whose
    working directory (and state dir, ``workdir/state``) is under ``exposed_root``, the
    directory itself of ``workdir_mode``; ``nofile`` (soft, hard) runs it under that
    RLIMIT_NOFILE. After the scenario: stopped and checked as ``launch_server`` does."""
    servers: list[ExposedServer] = []

    def launch(
        *flags: str,
        workdir_mode: int = 0o755,
        nofile: tuple[int, int] | None = None,
        start: bool = True,
    ) -> ExposedServer:
        workdir = exposed_root / f"server{len(servers)}"
        workdir.mkdir()
        workdir.chmod(workdir_mode)
        wrapper = [] if nofile is None else ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--"]
        server = ExposedServer(
            scenario_pki, workdir, f"{server_cgroup_parent}-x{len(servers)}", scenario_marker,
            list(flags), wrapper=wrapper,
        )  # fmt: skip
        servers.append(server)
        if start:
            server.start()
        return server

    yield launch
    problems = [problem for server in servers for problem in _shut_down(server)]
    assert not problems, "\n".join(problems)
