"""Which part of the cgroup2 tree this process may manage: the base job cgroups go under.

- Under systemd with ``Delegate=yes``, the unit's own cgroup: systemd hands that subtree to
  the service and marks it with the ``trusted.delegate`` extended attribute (``user.delegate``
  for a user's manager). The server's processes are then moved into a ``supervisor`` child
  of it, since cgroup v2 lets no process live where controllers are delegated.
- Otherwise the whole mount: a server started from a root shell, in a container with a cgroup
  namespace of its own, or in the test VM, where this process sits at the namespace's root.

Asked once per process, when the driver is chosen.
"""

from __future__ import annotations

import os

DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")


def own_cgroup(proc_cgroup: str = "/proc/self/cgroup") -> str:
    """This process's cgroup in the unified hierarchy (``/`` at the namespace's root)."""
    with open(proc_cgroup, encoding="utf-8") as f:
        for line in f:
            hierarchy, _, path = line.rstrip("\n").partition("::")
            if hierarchy == "0":
                return path or "/"
    return "/"


def managed_base(mount_point: str, own: str) -> str:
    """The nearest delegated cgroup at or above ``own``, relative to the mount; "" for none."""
    path = own.strip("/")
    while path:
        if delegated(os.path.join(mount_point, path)):
            return path
        path = os.path.dirname(path)
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
