"""A ``jobmgr-server`` in a PID namespace of its own with a small ``kernel.pid_max`` (per PID
namespace since Linux 6.14), so that every pid its launcher and jobs use comes round again
within a few hundred forks, beside a canary that keeps taking those recycled pids and records
any signal one of its processes gets: a witness that no signal reaches a process outside
jobmgr's jobs.

The namespace's PID 1 is a small Python init (INIT): it sets pid_max, starts the server and
the canary, forwards SIGTERM and SIGINT to the server, reaps every orphan, and exits with the
server's status (the kernel then kills whatever is left in the namespace).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.pki import ScenarioPKI
from harness.procs import alive, children, ns_pids
from harness.server import STOP_TIMEOUT, ServerProgram, Started

from .fixtures_server import LaunchServer

# PID 1 of the namespace: argv is pid_max, the canary's log, "--", then the server's argv.
INIT = r"""
import os, signal, sys
pid_max, canary_log, server_argv = sys.argv[1], sys.argv[2], sys.argv[4:]
with open("/proc/sys/kernel/pid_max", "w") as f:
    f.write(pid_max)
server = os.posix_spawn(server_argv[0], server_argv, os.environ)
canary = os.posix_spawn(sys.executable, [sys.executable, "-I", "-c", CANARY, canary_log], {})
for signo in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signo, lambda s, f: os.kill(server, s))
code = 1
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    if pid == server:
        code = os.waitstatus_to_exitcode(status)
        os.kill(canary, signal.SIGTERM)
    elif pid == canary:
        break
sys.exit(code if code >= 0 else 128 - code)
"""

# The canary: always about CANARY_CHILDREN children, each living 20-200 ms on pids the
# namespace has just recycled. A child records every catchable signal it gets; the parent
# records every child that a signal ended (SIGKILL cannot be caught).
CANARY = r"""
import os, random, signal, sys, time
log_path = sys.argv[1]
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
def record(line):
    with open(log_path, "a") as f:
        f.write(line + "\n")
children = set()
spawned = 0
while not stopping or children:
    while not stopping and len(children) < 12:
        pid = os.fork()
        if pid == 0:
            for signo in signal.valid_signals():
                if signo not in (signal.SIGKILL, signal.SIGSTOP):
                    try:
                        signal.signal(signo, lambda s, f: record(f"{os.getpid()} got signal {s}"))
                    except (OSError, ValueError):
                        pass
            time.sleep(random.uniform(0.02, 0.2))
            os._exit(0)
        children.add(pid)
        spawned += 1
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    children.discard(pid)
    if os.WIFSIGNALED(status):
        record(f"{pid} was killed by signal {os.WTERMSIG(status)}")
record(f"spawned {spawned}")
"""


class PidNamespaceServer(ServerProgram):
    """A ServerProgram whose program runs as the child of INIT in a new PID namespace."""

    def __init__(
        self, pki: ScenarioPKI, workdir: Path, cgroup_parent: str, *, marker: str, pid_max: int
    ) -> None:
        super().__init__(pki, pki.server_files(), workdir, cgroup_parent, marker=marker)
        self.canary_log = workdir / "canary.log"
        unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        init = [sys.executable, "-I", "-c", INIT.replace("CANARY", repr(CANARY))]
        settings = [str(pid_max), str(self.canary_log), "--"]
        self.argv = [*unshare, *init, *settings, *self.argv]

    def namespace_init(self) -> int | None:
        """The host pid of the namespace's PID 1 (unshare's one child)."""
        if self.process is None or self.process.poll() is not None:
            return None
        found = children(self.process.pid)
        return found[0] if found else None

    def host_pid(self, ns_pid: int) -> int | None:
        """The host pid of the process that is ``ns_pid`` in the namespace."""
        init = self.namespace_init()
        if init is None:
            return None
        namespace = os.readlink(f"/proc/{init}/ns/pid")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                    continue
                pids = ns_pids(int(entry))
            except (OSError, ValueError):
                continue
            if len(pids) >= 2 and pids[1] == ns_pid:
                return pids[0]
        return None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to the namespace's PID 1, which hands it to the server (unshare itself
        keeps SIGTERM blocked and forwards nothing); SIGKILL to unshare after ``timeout``,
        which (--kill-child) ends the namespace and all in it."""
        init = self.namespace_init()
        if init is not None:
            fd = os.pidfd_open(init)
            try:
                if self.namespace_init() == init:  # still unshare's child: the number is it
                    signal.pidfd_send_signal(fd, signal.SIGTERM)
            finally:
                os.close(fd)
        return super().terminate(timeout)

    def launcher_pid(self) -> int | None:
        """The launcher's host pid (launcher.pid holds its pid in the namespace)."""
        try:
            ns_pid = int((self.state_dir / "launcher.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        pid = self.host_pid(ns_pid)
        return pid if pid is not None and alive(pid) else None

    def canary_report(self) -> list[str]:
        try:
            return self.canary_log.read_text().splitlines()
        except FileNotFoundError:
            return []


@pytest.fixture
def launch_pidns_server(
    tmp_path: Path, scenario_pki: ScenarioPKI, server_cgroup_parent: str, scenario_marker: str
) -> Iterator[LaunchServer]:
    """Like launch_server, for servers in a PID namespace of their own: each is shut down
    after the scenario and must leave nothing behind."""
    servers = Started()

    def launch(*, pid_max: int = 600) -> ServerProgram:
        workdir = tmp_path / f"pidns{len(servers)}"
        workdir.mkdir()
        return servers.start(
            PidNamespaceServer(
                scenario_pki, workdir, f"{server_cgroup_parent}-ns{len(servers)}",
                marker=scenario_marker, pid_max=pid_max,
            )
        )  # fmt: skip

    yield launch
    servers.shut_down()
