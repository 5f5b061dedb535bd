"""cgroup v2: a job is one directory, ``<base>/<parent>/<name>``, in the unified hierarchy.

``base`` is the subtree this process may manage (see _placement): the whole mount, or the
cgroup systemd delegated to the server. The job's limits are written on ``<name>``; its
processes live one level lower, in ``<name>/job``, which is also the root of the job's cgroup
namespace. So a job that mounts cgroupfs (root may, in its own mount namespace) sees ``job``
as the top and cannot reach the files that limit it, with or without ``nsdelegate``; and
``job`` gets no controller of its own, so it has no limit file to write at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Mapping

from .._spec import UNLIMITED, Limits
from . import _placement
from ._base import CgroupStats
from ._device_bpf import attach
from ._device_rules import Device
from ._kernfs import (
    CgroupError,
    Knob,
    KnobTable,
    LimitValue,
    Reading,
    ReadingTable,
    apply_knobs,
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
    read_text,
    sigkill_members,
    write_device_rules,
    write_text,
)

CONTROLLERS = ("cpu", "memory", "io", "pids")
ENABLE_CONTROLLERS = " ".join(f"+{c}" for c in CONTROLLERS)
LEAF = "job"
"""The child of a job's cgroup that holds its processes (and roots its cgroup namespace)."""
# Where processes found in a delegated base are moved (a stray one systemd left there), so
# controllers can be enabled: v2 lets no process live in a cgroup that delegates memory or io.
SUPERVISOR = _placement.SUPERVISOR

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

# Written once as a job's cgroup is made, whatever its limits.
CREATE_KNOBS = (
    # An OOM kill (at the job's limit or machine-wide) takes the whole job, not one process of
    # it: a job that lost a worker process would otherwise go on, broken. Linux 4.19+.
    Knob("memory", "memory.oom.group", lambda _: "1", optional=True),
)

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


class Cgroup:
    """One job's cgroup: its limits on ``path``, its processes in ``path/job`` and below."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        """The job's cgroup directory (limits, usage figures, cgroup.kill)."""
        self.leaf = os.path.join(path, LEAF)
        """Where the job's init is placed."""
        self.dirs = dict.fromkeys(CONTROLLERS, path)
        """Controller -> directory, the shape the shared knob and reading tables expect."""
        # Computed once: the launcher hands these paths to the child that joins the cgroup.
        self._procs_files = (os.path.join(self.leaf, "cgroup.procs"),)
        self._kill_file = os.path.join(path, "cgroup.kill")

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a process writes its pid into to join this cgroup."""
        return list(self._procs_files)

    @property
    def clone_dir(self) -> str:
        """Where the job's init is placed, by clone3 with CLONE_INTO_CGROUP."""
        return self.leaf

    def change_limits(self, now: Limits, to: Limits) -> None:
        """Move this cgroup's limits from ``now`` (what it has) to ``to``."""
        change_limits(LIMIT_KNOBS, now, to, self.dirs)
        if changed(now, to, IO_MAX_KEYS):
            # Both keys each time: a rule of ``rbps=max wbps=max`` removes the device's rule.
            rule = " ".join(
                f"{key}={_amount(to.effective(field))}" for field, key in IO_MAX_KEYS.items()
            )
            write_device_rules(os.path.join(self.path, "io.max"), rule)

    def allow_devices(self, devices: tuple[Device, ...]) -> None:
        """Only ``devices``: the device filter program, attached to this cgroup."""
        attach(self.path, devices)

    def pids(self) -> list[int]:
        """Host PIDs of every process in the cgroup, in cgroups the job made below it too."""
        return read_pids(os.path.join(d, "cgroup.procs") for d in self._tree())

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, including ones forking meanwhile."""
        kill_until_empty([os.path.join(d, "cgroup.procs") for d in self._tree()], self._kill_round)

    def _kill_round(self) -> None:
        # cgroup.kill (Linux 5.14+) kills the whole subtree at once, forks in flight included.
        if os.path.exists(self._kill_file):
            write_text(self._kill_file, "1")
        else:
            sigkill_members([os.path.join(d, "cgroup.procs") for d in self._tree()])

    def stats(self) -> CgroupStats:
        """CPU time, peak memory and whether the OOM killer fired, read now."""
        return read_stats(STAT_READINGS, self.dirs)

    def destroy(self) -> None:
        """Kill what is left and remove the directories; returns once they are gone."""
        destroy_dirs(self._tree(), self.kill_all)

    def _tree(self) -> list[str]:
        """The job's directories, deepest first (the order rmdir needs): its leaf, any cgroup
        the job made below it, and its own."""
        below = [os.path.join(top, d) for top, dirs, _ in os.walk(self.path) for d in dirs]
        return [*sorted(below, key=lambda d: d.count("/"), reverse=True), self.path]


class Driver:
    """Creates job cgroups under ``<root>/<base>/<parent>`` of a cgroup2 mount at ``root``."""

    version: int = 2

    def __init__(self, root: str, parent: str, base: str = "") -> None:
        """``root``: where cgroup2 is mounted (tests may pass a directory imitating one).
        ``base``: the cgroup this process may manage, relative to ``root`` ("" for all)."""
        self.root = root
        self.base = base.strip("/")
        self.parent = check_parent(parent)
        self._base_dir = os.path.join(root, self.base) if self.base else root
        self._parent_dir = os.path.join(self._base_dir, self.parent)

    def create(self, name: str, limits: Limits) -> Cgroup:
        """Make the cgroup ``<parent>/<name>`` with these limits applied."""
        cgroup = self.open(name)
        self._enable_controllers()
        make_dirs([cgroup.path, cgroup.leaf])
        try:
            apply_knobs(CREATE_KNOBS, None, cgroup.dirs)
            cgroup.change_limits(UNLIMITED, limits)
        except BaseException:
            cgroup.destroy()
            raise
        return cgroup

    def _enable_controllers(self) -> None:
        """Delegate the job controllers from the base down to the parent, creating levels.

        A controller reaches a cgroup only if every ancestor lists it in cgroup.subtree_control.
        Enabling an already enabled controller is a no-op, so this is safe on every create and
        survives the parent being removed and recreated.
        """
        path = self._base_dir
        _delegate(path, vacate=bool(self.base))
        for part in self.parent.split("/"):
            path = os.path.join(path, part)
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            except OSError as e:
                raise CgroupError(f"cannot create cgroup {path}: {e.strerror}") from e
            _delegate(path, vacate=False)

    def open(self, name: str) -> Cgroup:
        """The cgroup of job ``name``; whether it exists is found out when it is used."""
        return Cgroup(check_name(name), os.path.join(self._parent_dir, name))

    def existing(self) -> list[str]:
        """Names of the job cgroups under the parent."""
        return sorted(child_dirs(self._parent_dir))

    def parent_dirs(self) -> list[str]:
        """The parent's directory, if it exists now."""
        return [self._parent_dir] if os.path.isdir(self._parent_dir) else []

    def remove_parent(self) -> None:
        """Remove the parent if it is empty; errors are ignored."""
        with contextlib.suppress(OSError):
            os.rmdir(self._parent_dir)


def _delegate(path: str, vacate: bool) -> None:
    """Enable the job controllers in ``path``/cgroup.subtree_control, or say why not.

    vacate: ``path`` is a delegated cgroup that may hold processes systemd started there:
    move them into its ``supervisor`` child first, as the kernel requires.
    """
    control = os.path.join(path, "cgroup.subtree_control")
    try:
        available = set(read_text(os.path.join(path, "cgroup.controllers")).split())
    except OSError as e:
        raise CgroupError(f"cannot read {path}/cgroup.controllers: {e.strerror}") from e
    missing = [c for c in CONTROLLERS if c not in available]
    if missing:
        raise CgroupError(
            f"cannot enable {' '.join(missing)} in {control}: {path}/cgroup.controllers offers "
            f"only '{' '.join(sorted(available))}', so the cgroup above does not delegate them "
            "(under systemd, start jobmgr-server with Delegate=yes; see docs/usage.md)"
        )
    try:
        write_text(control, ENABLE_CONTROLLERS)
    except CgroupError as e:
        if _errno(e) == errno.EBUSY and vacate:
            _vacate(path)
            try:
                write_text(control, ENABLE_CONTROLLERS)
                return
            except CgroupError as again:
                e = again
        code = _errno(e)
        reason = os.strerror(code) if code is not None else str(e)
        raise CgroupError(
            f"cannot enable {' '.join(CONTROLLERS)} in {control}: {reason} ({_advice(code)})"
        ) from e


def _errno(error: CgroupError) -> int | None:
    cause = error.__cause__
    return cause.errno if isinstance(cause, OSError) else None


def _vacate(path: str) -> None:
    """Move every process of ``path`` into ``path/supervisor``."""
    supervisor = os.path.join(path, SUPERVISOR)
    with contextlib.suppress(FileExistsError):
        os.mkdir(supervisor)
    for pid in read_pids([os.path.join(path, "cgroup.procs")]):
        with contextlib.suppress(CgroupError):  # it exited meanwhile
            write_text(os.path.join(supervisor, "cgroup.procs"), str(pid))


def _advice(code: int | None) -> str:
    if code == errno.EBUSY:
        return (
            "processes live in that cgroup, and v2 allows none where controllers are delegated; "
            "give jobmgr-server a cgroup of its own (systemd: Delegate=yes)"
        )
    if code in (errno.EPERM, errno.EACCES):
        return (
            "this process may not manage that cgroup; under systemd, start jobmgr-server "
            "with Delegate=yes (see docs/usage.md)"
        )
    return "see docs/usage.md, cgroup v2"
