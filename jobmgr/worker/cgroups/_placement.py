"""Which part of the cgroup2 tree this process may manage: the base job cgroups go under.

- Under systemd, the unit's own cgroup when systemd delegated it (``Delegate=yes``, which marks
  it with the ``trusted.delegate`` extended attribute, ``user.delegate`` for a user's manager)
  and started the server in its ``supervisor`` child (``DelegateSubgroup=supervisor``, systemd
  254+), as the shipped unit file asks. cgroup v2 lets no process live in a cgroup that
  delegates memory or io to children, so the unit's own cgroup must stay empty: then every
  restart of the service can place the new server in ``supervisor`` while jobs run on.
- Otherwise the whole mount: a server started from a root shell, in a container with a cgroup
  namespace of its own, in the test VM; and under an older systemd that starts the server in
  the unit's own cgroup, since enabling controllers there would make systemd unable to start
  the server again while any job (or the launcher's warm slots) lives below it.

Asked once per process, when the driver is chosen.
"""

from __future__ import annotations

import os

DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")
SUPERVISOR = "supervisor"
"""The child of a delegated unit's cgroup that holds the server and its launcher."""


def own_cgroup(proc_cgroup: str = "/proc/self/cgroup") -> str:
    """This process's cgroup in the unified hierarchy (``/`` at the namespace's root)."""
    with open(proc_cgroup, encoding="utf-8") as f:
        for line in f:
            hierarchy, _, path = line.rstrip("\n").partition("::")
            if hierarchy == "0":
                return path or "/"
    return "/"


def managed_base(mount_point: str, own: str) -> str:
    """The delegated unit cgroup whose ``supervisor`` child ``own`` is, relative to the mount;
    "" (the whole mount) otherwise."""
    unit, _, leaf = own.strip("/").rpartition("/")
    if leaf == SUPERVISOR and unit and delegated(os.path.join(mount_point, unit)):
        return unit
    return ""


def delegated(path: str) -> bool:
    """Whether systemd marked the cgroup at ``path`` as delegated."""
    for name in DELEGATE_XATTRS:
        try:
            if os.getxattr(path, name) == b"1":
                return True
        except OSError:
            continue
    return False
