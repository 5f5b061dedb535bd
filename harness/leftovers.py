"""What a jobmgr-server may leave behind, how to look for it, and how to clear it: the state
dir's launcher (it outlives a server killed with SIGKILL, by design), the job cgroups under the
server's cgroup parent (found through the cgroup driver), processes whose argv carries a
scenario's marker, and a tmpfs mounted on a state dir."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .cgroups import parent_dirs, remove_all
from .poll import wait_until
from .procs import alive, marked_processes

LAUNCHER_PACKAGE = b"jobmgr.worker."  # the launcher runs as python -m jobmgr.worker.<module>
# How long each of a launcher, a cgroup parent and a job's processes gets to go once its
# server has stopped.
SETTLE_SECONDS = 15.0


def launcher_pid(state_dir: Path) -> int | None:
    """The pid in the state dir's launcher.pid, if that process is a live launcher of it."""
    try:
        pid = int((state_dir / "launcher.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    # A stale file may name a pid since reused: only a live launcher of this dir counts.
    is_launcher = any(arg.startswith(LAUNCHER_PACKAGE) for arg in cmdline)
    return pid if alive(pid) and is_launcher and str(state_dir).encode() in cmdline else None


def left_behind(
    cgroup_parent: str,
    *,
    launcher: int | None = None,
    marker: str = "",
    within: float = SETTLE_SECONDS,
) -> list[str]:
    """What is still there after ``within`` seconds for each to go: the process ``launcher``,
    any cgroup of ``cgroup_parent``, any process whose argv carries ``marker``."""
    problems = []
    for what, gone in (
        ("the launcher to exit", lambda: launcher is None or not alive(launcher)),
        ("the job cgroups to go", lambda: not parent_dirs(cgroup_parent)),
        ("the jobs' processes to go", lambda: not marker or not marked_processes(marker)),
    ):
        if not wait_until(gone, within):
            problems.append(
                f"timed out after {within:g}s waiting for {what} (cgroup parent {cgroup_parent})"
            )
    return problems


def clear(cgroup_parent: str, *, launcher: int | None = None, marker: str = "") -> None:
    """Kill and remove whatever is left (a launcher that would not stop, any process carrying
    ``marker``, every cgroup of ``cgroup_parent``), so that one run's leak does not spoil the
    next."""
    stuck = [launcher] if launcher is not None and alive(launcher) else []
    for pid in stuck + (marked_processes(marker) if marker else []):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    remove_all(cgroup_parent)


def unmount(path: Path) -> None:
    """Unmount ``path``, waiting out the moment a dying process may still hold it."""
    for _ in range(50):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "--lazy", str(path)], check=False)
    raise AssertionError(f"{path} was still busy; unmounted lazily")
