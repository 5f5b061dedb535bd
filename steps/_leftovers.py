"""What a crashed jobmgr-server may leave behind, and how a scenario's teardown clears it:
the state dir's launcher (it outlives a server killed with SIGKILL, by design), the job
cgroups it kept, and a tmpfs mounted on the state dir."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from jobmgr.worker.cgroups import detect_driver

LAUNCHER_MODULE = "jobmgr.worker._launcher"


def launcher_pid(state_dir: Path) -> int | None:
    """The pid in the state dir's launcher.pid, if that process is a live launcher of it."""
    try:
        pid = int((state_dir / "launcher.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    # A stale file may name a pid since reused: only a live launcher of this dir counts.
    if state == "Z" or LAUNCHER_MODULE.encode() not in cmdline:
        return None
    return pid if str(state_dir).encode() in cmdline else None


def clear_launcher(state_dir: Path, cgroup_parent: str, wait: float = 10.0) -> bool:
    """Give a launcher ``wait`` seconds to finish shutting down, then kill it and remove
    every cgroup left under ``cgroup_parent``. True if a launcher had to be killed."""
    deadline = time.monotonic() + wait
    while launcher_pid(state_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = launcher_pid(state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    driver = detect_driver(cgroup_parent)
    for job in driver.existing():
        driver.open(job).destroy()
    driver.remove_parent()
    return pid is not None


def unmount(path: Path) -> None:
    """Unmount ``path``, waiting out the moment a dying process may still hold it."""
    for _ in range(50):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "--lazy", str(path)], check=False)
    raise AssertionError(f"{path} was still busy; unmounted lazily")
