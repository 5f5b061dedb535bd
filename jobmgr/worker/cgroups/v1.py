"""cgroup v1: a job has one directory in each controller's hierarchy, ``<mount>/<parent>/<name>``.

Controllers may share a hierarchy (``cpu,cpuacct`` mounted together); such a hierarchy holds one
directory for all of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from .._spec import UNLIMITED, Limits
from ._base import CgroupStats
from ._device_rules import Device
from ._kernfs import (
    Knob,
    KnobTable,
    LimitValue,
    Reading,
    ReadingTable,
    change_limits,
    changed,
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

# No freezer: every job is a PID namespace, and its init's death kills the rest at once (the
# kernel stops forks in a dying namespace), so freezing adds a hierarchy to each job's creation,
# join and removal and buys nothing.
CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio", "pids", "devices")

CFS_PERIOD_US = 100_000  # a new cgroup's period: the kernel default, so never written
NO_LIMIT = "-1"


def _cfs_quota(cpu: LimitValue) -> str:
    return str(round(cpu * CFS_PERIOD_US)) if cpu else NO_LIMIT


def _bytes(value: LimitValue) -> str:
    return str(int(value)) if value else NO_LIMIT


def _pids(value: LimitValue) -> str:
    return str(int(value)) if value else "max"


def _no_swap(value: LimitValue) -> str | None:
    return "0" if value else None


LIMIT_KNOBS: KnobTable = {
    "cpu": (Knob("cpu", "cpu.cfs_quota_us", _cfs_quota),),
    # memsw (RAM + swap) caps swap too, so a job over its limit is OOM-killed instead of swapping.
    # The kernel refuses memsw below memory.limit_in_bytes, so memory goes first when the limit
    # is lowered and memsw first when it is raised (see KnobTable).
    # Without swap accounting, swappiness 0 is the next best way to keep the job out of swap.
    "memory_bytes": (
        Knob("memory", "memory.limit_in_bytes", _bytes),
        Knob(
            "memory",
            "memory.memsw.limit_in_bytes",
            _bytes,
            fallback=Knob("memory", "memory.swappiness", _no_swap),
        ),
    ),
    "pids": (Knob("pids", "pids.max", _pids),),
}

# Limits field -> (controller, file taking one ``MAJ:MIN BYTES_PER_SECOND`` rule per write).
THROTTLE_FILES: Mapping[str, tuple[str, str]] = {
    "io_read_bps": ("blkio", "blkio.throttle.read_bps_device"),
    "io_write_bps": ("blkio", "blkio.throttle.write_bps_device"),
}

STAT_READINGS: ReadingTable = {
    "cpu_seconds": (Reading("cpuacct", "cpuacct.usage", lambda text: int(text) / 1e9),),
    "peak_memory_bytes": (Reading("memory", "memory.max_usage_in_bytes", int),),
    "oom_killed": (
        Reading("memory", "memory.oom_control", lambda text: keyed_int(text, "oom_kill") > 0),
    ),
}


class Cgroup:
    """One job's directories, one per hierarchy."""

    def __init__(self, name: str, dirs: Mapping[str, str]) -> None:
        self.name = name
        self.dirs = dict(dirs)
        """Controller -> the job's directory in that controller's hierarchy."""
        # Computed once: the launcher hands these paths to the child that joins the cgroup.
        self.hierarchy_dirs = tuple(dict.fromkeys(self.dirs.values()))
        """The distinct directories (controllers sharing a hierarchy share one)."""
        self._procs_files = tuple(os.path.join(d, "cgroup.procs") for d in self.hierarchy_dirs)

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a process writes its pid into to join this cgroup."""
        return list(self._procs_files)

    @property
    def clone_dir(self) -> None:
        """None: CLONE_INTO_CGROUP takes cgroup2 directories only."""
        return None

    def change_limits(self, now: Limits, to: Limits) -> None:
        """Move this cgroup's limits from ``now`` (what it has) to ``to``."""
        change_limits(LIMIT_KNOBS, now, to, self.dirs)
        for field, (controller, filename) in THROTTLE_FILES.items():
            if changed(now, to, (field,)):
                # A rule of 0 removes the device's rule: unlimited.
                value = str(int(to.effective(field) or 0))
                write_device_rules(os.path.join(self.dirs[controller], filename), value)

    def allow_devices(self, devices: tuple[Device, ...]) -> None:
        """Only ``devices``: devices.deny all, then one devices.allow line each."""
        write_text(os.path.join(self.dirs["devices"], "devices.deny"), "a")
        for device in devices:
            write_text(os.path.join(self.dirs["devices"], "devices.allow"), device.v1_rule())

    def pids(self) -> list[int]:
        """Host PIDs of every process in the cgroup (in any of its hierarchies)."""
        return read_pids(self._procs_files)

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, including ones forking meanwhile."""
        kill_until_empty(self._procs_files, lambda: sigkill_members(self._procs_files))

    def stats(self) -> CgroupStats:
        """CPU time, peak memory and whether the OOM killer fired, read now."""
        return read_stats(STAT_READINGS, self.dirs)

    def destroy(self) -> None:
        """Kill what is left and remove every directory; returns once they are gone."""
        destroy_dirs(self.hierarchy_dirs, self.kill_all)


class Driver:
    """Creates job cgroups under ``parent`` in each v1 hierarchy the job uses."""

    version: int = 1

    def __init__(self, mounts: Mapping[str, str], parent: str) -> None:
        """``mounts``: controller -> mount point; needs every CONTROLLERS entry."""
        missing = [c for c in CONTROLLERS if c not in mounts]
        if missing:
            raise ValueError(f"cgroup v1 needs mounts for {', '.join(missing)}")
        self.parent = check_parent(parent)
        self.mounts = {c: mounts[c] for c in CONTROLLERS}
        """Controller -> mount point of its hierarchy, for the controllers a job uses."""
        self._parent_dirs = tuple(
            dict.fromkeys(os.path.join(m, self.parent) for m in self.mounts.values())
        )

    def create(self, name: str, limits: Limits) -> Cgroup:
        """Make the cgroup ``<parent>/<name>`` in every hierarchy with these limits applied."""
        cgroup = self.open(name)
        make_dirs(cgroup.hierarchy_dirs)
        try:
            cgroup.change_limits(UNLIMITED, limits)
        except BaseException:
            cgroup.destroy()
            raise
        return cgroup

    def open(self, name: str) -> Cgroup:
        """The cgroup of job ``name``; whether it exists is found out when it is used."""
        check_name(name)
        dirs = {c: os.path.join(m, self.parent, name) for c, m in self.mounts.items()}
        return Cgroup(name, dirs)

    def existing(self) -> list[str]:
        """Names of the job cgroups under the parent, in any hierarchy."""
        names: set[str] = set()
        for path in self._parent_dirs:
            names |= child_dirs(path)
        return sorted(names)

    def parent_dirs(self) -> list[str]:
        """The parent's directories that exist now, one per hierarchy that still has it."""
        return [path for path in self._parent_dirs if os.path.isdir(path)]

    def remove_parent(self) -> None:
        """Remove the parent from every hierarchy where it is empty; errors are ignored."""
        for path in self._parent_dirs:
            with contextlib.suppress(OSError):
                os.rmdir(path)
