"""Where the cgroup filesystems are mounted (from mountinfo), and which version to drive.

The choice is made once, here: cgroup v2 when its mount offers every controller a job needs,
otherwise cgroup v1 with one mount per controller. Nothing else reads mountinfo or knows where
cgroupfs lives.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from . import v1, v2
from ._base import CgroupDriver
from ._kernfs import CgroupError, read_text
from ._placement import managed_base, own_cgroup


class CgroupsUnavailable(CgroupError):
    """Neither cgroup version offers the controllers a job needs on this machine."""


@dataclass(frozen=True)
class Mount:
    """One cgroup or cgroup2 filesystem from mountinfo."""

    fstype: str
    mount_point: str
    super_options: frozenset[str]
    """For cgroup v1, the controllers of the hierarchy, among other options."""


# mountinfo writes space, tab, newline and backslash in paths as a backslash and 3 octal digits.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescaped(field: str) -> str:
    """The path mountinfo writes as ``field``, its escapes (see _OCTAL_ESCAPE) undone."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(mountinfo: str, root_override: str | None = None) -> list[Mount]:
    """The cgroup and cgroup2 mounts listed in ``mountinfo``, in order.

    root_override: a directory every mount point is taken relative to, as if chrooted there.
    """
    mounts = []
    with open(mountinfo, encoding="utf-8") as f:
        for line in f:
            # Fields: id parent dev root mount-point options [optional...] - fstype source super
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            point = unescaped(fields[4])
            if root_override is not None:
                point = os.path.join(root_override, point.lstrip("/"))
            mounts.append(Mount(tail[0], point, frozenset(tail[2].split(","))))
    return mounts


def detect_driver(
    parent: str,
    *,
    mountinfo: str = "/proc/self/mountinfo",
    root_override: str | None = None,
    proc_cgroup: str = "/proc/self/cgroup",
) -> CgroupDriver:
    """The driver for this machine's cgroups, making job cgroups under ``parent``.

    On cgroup v2, ``parent`` is taken relative to the subtree this process may manage (see
    _placement): its systemd unit's cgroup under ``Delegate=yes``, else the mount's root.

    mountinfo:      the mount table to read (tests pass a fake one).
    root_override:  a directory the mount points are resolved under, as if chrooted there.
    proc_cgroup:    this process's cgroup membership (tests pass a fake one).
    Raises CgroupsUnavailable, naming what is missing, if neither version is usable.
    """
    mounts = read_mounts(mountinfo, root_override)
    v2_root, v2_problem = _usable_v2_root(mounts)
    if v2_root is not None:
        base = managed_base(v2_root, own_cgroup(proc_cgroup))
        return v2.Driver(root=v2_root, parent=parent, base=base)
    v1_mounts = v1_controller_mounts(mounts)
    missing = [c for c in v1.CONTROLLERS if c not in v1_mounts]
    if not missing:
        return v1.Driver(v1_mounts, parent)
    raise CgroupsUnavailable(
        f"no usable cgroups in {mountinfo}: {v2_problem}, "
        f"and cgroup v1 has no hierarchy for {', '.join(missing)}"
    )


def _usable_v2_root(mounts: list[Mount]) -> tuple[str | None, str]:
    """The first cgroup2 mount offering every v2 job controller, else why there is none."""
    problem = "no cgroup2 filesystem is mounted"
    for mount in mounts:
        if mount.fstype != "cgroup2":
            continue
        path = os.path.join(mount.mount_point, "cgroup.controllers")
        try:
            available = set(read_text(path).split())
        except OSError as e:
            problem = f"cannot read {path}: {e.strerror}"
            continue
        lacking = [c for c in v2.CONTROLLERS if c not in available]
        if not lacking:
            return mount.mount_point, ""
        problem = f"cgroup2 at {mount.mount_point} lacks {', '.join(lacking)}"
    return None, problem


def v1_controller_mounts(mounts: list[Mount]) -> dict[str, str]:
    """Controller -> mount point of its v1 hierarchy, for the controllers a v1 job uses."""
    found: dict[str, str] = {}
    for mount in mounts:
        if mount.fstype != "cgroup":
            continue
        for controller in v1.CONTROLLERS:
            if controller in mount.super_options:
                found.setdefault(controller, mount.mount_point)
    return found
