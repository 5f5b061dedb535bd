"""The host's path sockets, which a job's view must cover.

A unix socket bound to a path is reached by that path, whatever network namespace the caller
is in, and a read-only mount does not stop connect() (it needs write permission on the socket's
inode, which the mount's flag does not touch: measured). The hidden directories (/run, /home,
/root) and the job's private /tmp hold most; the rest are listed by the kernel in
/proc/net/unix of the namespace they were bound in, which for host services is the launcher's.
Each start covers those its view still shows with an empty file (connect(): ECONNREFUSED).

The list is read again when it is older than ``max_age`` seconds (one read costs about 3 us a
socket), so a socket bound on the host within that time before a start, or while the job runs,
is not covered: it is reachable if its mode lets the job's uid write it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

PROC_NET_UNIX = "/proc/net/unix"
# The job's own: a host socket under these paths is out of its sight already.
PRIVATE = ("/tmp", "/var/tmp", "/dev", "/proc", "/sys", "/scratch")


class HostSockets:
    """Path sockets bound in this process's network namespace, re-read at most every
    ``max_age`` seconds."""

    def __init__(self, max_age: float = 1.0, source: str = PROC_NET_UNIX) -> None:
        self._max_age = max_age
        self._source = source
        self._paths: tuple[str, ...] = ()
        self._read_at = -max_age - 1.0

    def paths(self) -> tuple[str, ...]:
        now = time.monotonic()
        if now - self._read_at > self._max_age:
            self._paths = read_paths(self._source)
            self._read_at = now
        return self._paths


def read_paths(source: str = PROC_NET_UNIX) -> tuple[str, ...]:
    """The distinct socket paths in ``source`` (abstract names, which start with @, are kept to
    the network namespace and left out)."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    found: dict[str, None] = {}
    for line in b"".join(chunks).split(b"\n")[1:]:
        # Num RefCount Protocol Flags Type St Inode Path: the path may hold spaces.
        parts = line.split(None, 7)
        if len(parts) == 8 and parts[7].startswith(b"/"):
            found[os.fsdecode(parts[7])] = None
    return tuple(found)


def masks_for(paths: Iterable[str], hidden: Iterable[str], rootfs: str | None) -> list[str]:
    """The sockets of ``paths`` a job's view shows, as the job sees them: for a job on the
    host's root, those not under a hidden or private path; for a job on ``rootfs``, those
    under it."""
    if rootfs is not None:
        top = rootfs.rstrip("/") + "/"
        return [path[len(top) - 1 :] for path in paths if path.startswith(top)]
    covered = tuple(p.rstrip("/") + "/" for p in (*PRIVATE, *hidden))
    return [path for path in paths if not (path + "/").startswith(covered)]
