"""Each slot's own uid: a lease, held by the slot's init for as long as the init lives.

A lease is an open file description locked (an OFD lock, F_OFD_SETLK) on byte ``uid`` of one
file every jobmgr launcher on the host shares: two launchers, of two state directories, never
give one uid to two slots. The launcher passes the descriptor to the slot's init and closes its
own; the kernel drops the lock when the last descriptor goes, i.e. when the init exits, which
is when the PID namespace's last process is gone and with it the job's mount namespace and its
tmpfs: a uid is free again only once nothing of the job that had it is left. A launcher that
dies leaves its inits holding their leases until they end.

Leases are taken round-robin through the range, so a freed uid waits as long as it can before
it is handed out again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

LEASES = "/run/jobmgr/uid-leases"
# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (and padding).
_FLOCK = struct.Struct("hhqqi4x")


class NoUidLeft(Exception):
    """Every uid of the range is held by a live slot."""


@dataclass(frozen=True)
class Lease:
    """A uid held while ``fd`` (locked on byte ``uid``) stays open somewhere."""

    uid: int
    fd: int


class UidLeases:
    """Takes leases on uids of ``first``...``last`` (inclusive), round-robin."""

    def __init__(self, first: int, last: int, path: str = LEASES) -> None:
        self.first, self.last = first, last
        self._path = path
        self._next = first
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)

    def take(self) -> Lease:
        """A uid no live slot of any launcher holds; NoUidLeft if there is none. The caller
        owns the lease's fd."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            count = self.last - self.first + 1
            for step in range(count):
                uid = self.first + (self._next - self.first + step) % count
                if _lock(fd, uid):
                    self._next = self.first + (uid - self.first + 1) % count
                    return Lease(uid, fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        raise NoUidLeft(f"all {count} uids of {self.first}-{self.last} belong to live jobs")


def _lock(fd: int, offset: int) -> bool:
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def held(path: str, uid: int) -> bool:
    """Whether some live slot holds ``uid`` (for tests and diagnostics)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, uid, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe)
        return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)
    finally:
        os.close(fd)
