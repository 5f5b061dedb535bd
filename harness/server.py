"""Servers run as subprocesses: any program that says on stdout where it listens, and
``jobmgr-server`` above all, started (and started again on the same state dir), crashed,
stopped, and checked for what it left behind.

A program is ready when a line ``... listening at HOST:PORT`` appears in its stdout, which goes
to a file: nothing has to keep reading a pipe, and a restart reads its own run's line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from .cgroups import job_names
from .client import Client
from .leftovers import SETTLE_SECONDS, clear, launcher_pid, left_behind
from .pki import ScenarioPKI, ServerFiles
from .poll import wait_until
from .procs import alive
from .programs import program, program_env
from .speed import scaled

LISTENING = re.compile(rb"listening at (\S+):(\d+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
GRACE_SECONDS = 2  # --grace: how long a stopped job gets between SIGTERM and SIGKILL


class ServerDidNotStart(RuntimeError):
    """The program exited, or said nothing about listening in time; the message has its log."""


class ListeningProcess:
    """A server program run as a subprocess in ``workdir``, its log in ``<name>.stderr`` there
    (every run's, one after the other)."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, host: str) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.host = host
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.poll() is None, f"{self.name} is not up"
        return self.process.pid

    @property
    def stdout(self) -> str:
        """What the last run wrote to stdout."""
        return _read(self.stdout_path)

    @property
    def stderr(self) -> str:
        """What every run wrote to stderr (its log)."""
        return _read(self.stderr_path)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the program (again) and wait until it says where it listens. Raises
        ServerDidNotStart, the program killed, if it exits or says nothing in ``timeout``
        (scaled by this machine's speed, as every wait is)."""
        assert not self.running, f"{self.name} is already running"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=program_env(), cwd=self.workdir,
            )  # fmt: skip
        process = self.process
        wait_until(lambda: self._port() is not None or process.poll() is not None, timeout)
        port = self._port()
        if port is None:
            process.kill()
            process.wait()
            raise ServerDidNotStart(
                f"{self.name} did not start in {scaled(timeout):.0f}s (exit status "
                f"{process.returncode}); stdout "
                f"{self.stdout!r}; its log ends:\n{self.stderr[-3000:]}"
            )
        self.port = port

    def _port(self) -> int | None:
        match = LISTENING.search(self.stdout_path.read_bytes())
        return int(match.group(2)) if match else None

    def assert_up(self) -> None:
        """Fail, saying how it ended, if the program has died."""
        assert self.process is not None, f"{self.name} was never started"
        code = self.process.poll()
        if code is not None:
            how = f"signal {-code}" if code < 0 else f"status {code}"
            raise AssertionError(f"{self.name} died ({how}); its log ends:\n{self.stderr[-3000:]}")

    def send_signal(self, signo: int) -> None:
        assert self.process is not None, f"{self.name} was never started"
        self.process.send_signal(signo)

    def wait(self, timeout: float) -> int:
        """Wait for the program to exit; its exit status."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.wait(timeout)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, and wait for the exit status; SIGKILL if it is not gone in ``timeout``
        (scaled)."""
        assert self.process is not None, f"{self.name} was never started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill9(self) -> None:
        """SIGKILL the program, as a crash would."""
        assert self.process is not None, f"{self.name} was never started"
        self.process.kill()
        self.process.wait()


class ServerProcess(ListeningProcess):
    """``jobmgr-server`` on the state dir ``state_dir`` (by default ``workdir/state``) and its
    own cgroup parent, with the TLS ``files``; started again, it takes up the same state.
    ``wrapper`` is a command it runs under (``prlimit --nofile=1024:1024 --``), which execs it
    in its place."""

    def __init__(
        self,
        files: ServerFiles,
        workdir: Path,
        cgroup_parent: str,
        *args: str,
        host: str = "localhost",
        config: str | None = None,
        wrapper: Sequence[str] = (),
        state_dir: Path | None = None,
    ) -> None:
        self.cgroup_parent = cgroup_parent
        self.state_dir = state_dir or workdir / "state"
        self.config_path = workdir / "jobmgr.toml" if config is not None else None
        """The --config file, written from ``config``; a reload reads it again."""
        config_args: list[str] = []
        if self.config_path is not None:
            self.config_path.write_text(config or "")
            config_args = ["--config", str(self.config_path)]
        argv = [
            *wrapper, *program("jobmgr-server"), *config_args, "--host", host, "--port", "0",
            "--ca", str(files.ca), "--cert", str(files.cert), "--key", str(files.key),
            "--state-dir", str(self.state_dir), "--cgroup-parent", cgroup_parent,
            "--grace", str(GRACE_SECONDS), *args,
        ]  # fmt: skip
        super().__init__("jobmgr-server", argv, workdir, host)

    def launcher_pid(self) -> int | None:
        """The state dir's launcher, if one is running."""
        return launcher_pid(self.state_dir)

    def kill9_with_launcher(self) -> None:
        """SIGKILL the program and then its launcher, as a crash of the host would end both;
        returns once the launcher is gone. The jobs' processes outlive it."""
        launcher = self.launcher_pid()
        assert launcher is not None, "no launcher is running"
        self.kill9()
        os.kill(launcher, signal.SIGKILL)
        gone = wait_until(lambda: self.launcher_pid() is None, SETTLE_SECONDS)
        assert gone, f"the launcher (pid {launcher}) outlived SIGKILL by {SETTLE_SECONDS:g}s"

    def job_cgroups(self) -> set[str]:
        """Names of the cgroups (jobs and warm slots) under this server's parent."""
        return job_names(self.cgroup_parent)

    def shut_down(self, marker: str = "") -> list[str]:
        """Stop the server (or, after a crash, its launcher), then list whatever it left
        behind: a non-zero exit, its launcher, a cgroup, a process carrying ``marker``. What
        it left is cleared, so that one leak does not spoil what runs next."""
        problems = []
        launcher = self.launcher_pid()
        if self.running:
            code = self.terminate()
            if code != 0:
                problems.append(f"{self.name} exited {code}: {self.stderr[-2000:]}")
        if launcher is not None:
            stopped = self.process is not None and self.process.returncode == 0
            if stopped and not wait_until(lambda: not alive(launcher), SETTLE_SECONDS):
                problems.append(f"the launcher outlived {self.name} by {SETTLE_SECONDS:g}s")
            if alive(launcher):
                # What a crashed server leaves: its launcher, to be shut down (it stops the jobs).
                try:
                    os.kill(launcher, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        problems += left_behind(self.cgroup_parent, launcher=launcher, marker=marker)
        if problems:
            clear(self.cgroup_parent, launcher=launcher, marker=marker)
        return problems


class ServerProgram(ServerProcess, Client):
    """``jobmgr-server`` as a scenario drives it: the program, and a client of it holding the
    scenario's certificates. Every job it starts through ``marked`` carries ``marker`` in its
    argv, so that whatever of it survives is found anywhere on the host."""

    def __init__(
        self, pki: ScenarioPKI, files: ServerFiles, workdir: Path, cgroup_parent: str,
        *args: str, marker: str = "", config: str | None = None, wrapper: Sequence[str] = (),
        state_dir: Path | None = None,
    ) -> None:  # fmt: skip
        ServerProcess.__init__(
            self, files, workdir, cgroup_parent, *args, config=config, wrapper=wrapper,
            state_dir=state_dir,
        )  # fmt: skip
        Client.__init__(self, pki)
        self.marker = marker

    def marked(self, script: str) -> list[str]:
        """argv running ``script`` with sh, the marker as its $0."""
        return ["sh", "-c", script, self.marker]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.close_channels()
        super().start(timeout)

    def kill9(self) -> None:
        super().kill9()
        self.close_channels()

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        self.close_channels()
        return super().terminate(timeout)

    def shut_down(self, marker: str = "") -> list[str]:
        return super().shut_down(marker or self.marker)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


S = TypeVar("S", bound=ServerProgram)


class Started(list[ServerProgram]):
    """The servers a fixture started, shut down and checked together after the scenario."""

    def start(self, server: S) -> S:
        self.append(server)
        server.start()
        return server

    def shut_down(self) -> None:
        """Stop each; fail naming whatever any of them left behind (see ServerProgram)."""
        problems = [problem for server in self for problem in server.shut_down()]
        assert not problems, "\n".join(problems)
