"""cgroup v2: a job is one directory, ``<root>/<parent>/<name>``, in the unified hierarchy."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from .._spec import Limits
from ._base import CgroupStats
from ._kernfs import (
    CgroupError,
    Knob,
    KnobTable,
    LimitValue,
    Reading,
    ReadingTable,
    apply_limits,
    check_name,
    check_parent,
    child_dirs,
    destroy_dirs,
    keyed_int,
    kill_until_empty,
    make_dirs,
    read_pids,
    read_stats,
    sigkill_members,
    write_device_rules,
    write_text,
)

CONTROLLERS = ("cpu", "memory", "io", "pids")
ENABLE_CONTROLLERS = " ".join(f"+{c}" for c in CONTROLLERS)

CPU_PERIOD_US = 100_000
NO_LIMIT = "max"


def _cpu_max(cpu: LimitValue) -> str:
    quota = str(round(cpu * CPU_PERIOD_US)) if cpu else NO_LIMIT
    return f"{quota} {CPU_PERIOD_US}"


def _amount(value: LimitValue) -> str:
    return str(int(value)) if value else NO_LIMIT


def _swap(memory: LimitValue) -> str:
    # The memory limit covers swap too: a job over it is OOM-killed rather than swapped out.
    return "0" if memory else NO_LIMIT


LIMIT_KNOBS: KnobTable = {
    "cpu": (Knob("cpu", "cpu.max", _cpu_max),),
    "memory_bytes": (
        Knob("memory", "memory.max", _amount),
        # Absent when the kernel has no swap accounting, and then there is nothing to cap.
        Knob("memory", "memory.swap.max", _swap, optional=True),
    ),
    "pids": (Knob("pids", "pids.max", _amount),),
}

# Limits field -> key in io.max, whose rules read ``MAJ:MIN rbps=N wbps=N``.
IO_MAX_KEYS: Mapping[str, str] = {"io_read_bps": "rbps", "io_write_bps": "wbps"}

STAT_READINGS: ReadingTable = {
    "cpu_seconds": (Reading("cpu", "cpu.stat", lambda text: keyed_int(text, "usage_usec") / 1e6),),
    # memory.peak arrived in Linux 5.19; before it, the current usage is the best there is.
    "peak_memory_bytes": (
        Reading("memory", "memory.peak", int),
        Reading("memory", "memory.current", int),
    ),
    "oom_killed": (
        Reading("memory", "memory.events", lambda text: keyed_int(text, "oom_kill") > 0),
    ),
}


def _delegate(path: str) -> None:
    write_text(os.path.join(path, "cgroup.subtree_control"), ENABLE_CONTROLLERS)


class Cgroup:
    """One job's directory in the unified hierarchy."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        """The job's cgroup directory."""
        self.dirs = dict.fromkeys(CONTROLLERS, path)
        """Controller -> directory, the shape the shared knob and reading tables expect."""
        # Computed once: the launcher hands these paths to the child that joins the cgroup.
        self._procs_files = (os.path.join(path, "cgroup.procs"),)
        self._kill_file = os.path.join(path, "cgroup.kill")

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a process writes its pid into to join this cgroup."""
        return list(self._procs_files)

    def set_limits(self, limits: Limits) -> None:
        """Apply ``limits`` to this cgroup, which must not have been limited before."""
        apply_limits(LIMIT_KNOBS, limits, self.dirs)
        # A fresh cgroup has no io.max rules, so no limit at all needs no write.
        if any(limits.effective(field) for field in IO_MAX_KEYS):
            rule = " ".join(
                f"{key}={_amount(limits.effective(field))}" for field, key in IO_MAX_KEYS.items()
            )
            write_device_rules(os.path.join(self.path, "io.max"), rule)

    def pids(self) -> list[int]:
        """Host PIDs of every process in the cgroup."""
        return read_pids(self._procs_files)

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, including ones forking meanwhile."""
        kill_until_empty(self._procs_files, self._kill_round)

    def _kill_round(self) -> None:
        # cgroup.kill (Linux 5.14+) kills the whole cgroup atomically, forks in flight included.
        if os.path.exists(self._kill_file):
            write_text(self._kill_file, "1")
        else:
            sigkill_members(self._procs_files)

    def stats(self) -> CgroupStats:
        """CPU time, peak memory and whether the OOM killer fired, read now."""
        return read_stats(STAT_READINGS, self.dirs)

    def destroy(self) -> None:
        """Kill what is left and remove the directory; returns once it is gone."""
        destroy_dirs([self.path], self.kill_all)


class Driver:
    """Creates job cgroups under ``<root>/<parent>`` of a cgroup2 mount at ``root``."""

    version: int = 2

    def __init__(self, root: str, parent: str) -> None:
        """``root``: where cgroup2 is mounted (tests may pass a directory imitating one)."""
        self.root = root
        self.parent = check_parent(parent)
        self._parent_dir = os.path.join(root, self.parent)

    def create(self, name: str, limits: Limits) -> Cgroup:
        """Make the cgroup ``<parent>/<name>`` with these limits applied."""
        cgroup = self.open(name)
        self._enable_controllers()
        make_dirs([cgroup.path])
        try:
            cgroup.set_limits(limits)
        except BaseException:
            cgroup.destroy()
            raise
        return cgroup

    def _enable_controllers(self) -> None:
        """Delegate the job controllers from the root down to the parent, creating levels.

        A controller reaches a cgroup only if every ancestor lists it in cgroup.subtree_control.
        Enabling an already enabled controller is a no-op, so this is safe on every create and
        survives the parent being removed and recreated.
        """
        path = self.root
        try:
            _delegate(path)
            for part in self.parent.split("/"):
                path = os.path.join(path, part)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
                _delegate(path)
        except (OSError, CgroupError) as e:
            raise CgroupError(f"cannot delegate {', '.join(CONTROLLERS)} to {path}: {e}") from e

    def open(self, name: str) -> Cgroup:
        """The cgroup of job ``name``; whether it exists is found out when it is used."""
        return Cgroup(check_name(name), os.path.join(self._parent_dir, name))

    def existing(self) -> list[str]:
        """Names of the job cgroups under the parent."""
        return sorted(child_dirs(self._parent_dir))

    def remove_parent(self) -> None:
        """Remove the parent if it is empty; errors are ignored."""
        with contextlib.suppress(OSError):
            os.rmdir(self._parent_dir)
