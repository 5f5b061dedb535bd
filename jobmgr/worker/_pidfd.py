"""Processes by handle, never by number: the launcher's pidfds of the inits and the zygote.

A pid names whatever process holds that number now; a pidfd names one process for good, and a
signal sent through it to a process that has ended fails (ESRCH) instead of reaching whoever
took the number since. So the launcher holds a pidfd of every process it supervises, signals
only through it, and learns of an exit when the pidfd becomes readable.

Taking the pidfd of an init without a race rests on one invariant: **the launcher reaps only
through pidfds** (``waitid(P_PIDFD)``), never with ``waitpid(-1)``. An init is the child of
its "mid" until the mid exits, then (the launcher being a child subreaper) the launcher's;
nobody else reaps it. So until the launcher has taken a pidfd of it, an init that ended stays
a zombie and its number cannot be reused: ``pidfd_open(N)`` after the mid's "pid N" report
names that init, alive or not. A child the launcher holds no pidfd of (a mid orphaned when the
zygote died) is reaped by ``reap_strays`` only once it is a zombie and plainly not an init.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
from collections.abc import Collection

log = logging.getLogger("jobmgr.launcher")


class ProcessHandle:
    """A pidfd of one process. ``pid`` is for log lines only: nothing is sent to it."""

    def __init__(self, fd: int, pid: int) -> None:
        self.fd = fd
        self.pid = pid
        self.ended = False  # its pidfd said it has exited
        self.status: int | None = None  # its wait status, once reaped here

    @classmethod
    def of_child(cls, pid: int) -> ProcessHandle:
        """A handle of ``pid``, a child of this process (or of a mid) not reaped yet."""
        return cls(os.pidfd_open(pid), pid)

    def send(self, signo: int) -> bool:
        """Send ``signo``; False if the process has ended."""
        try:
            signal.pidfd_send_signal(self.fd, signo)
        except ProcessLookupError:
            return False
        return True

    def collect(self) -> None:
        """Its pidfd became readable: it has exited. Reap it, if it is this process's child
        (one that is not, an init adopted from a dead launcher, is its parent's to reap; its
        exit is known from its report)."""
        self.ended = True
        if self.status is not None:
            return
        try:
            result = os.waitid(os.P_PIDFD, self.fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return
        if result is not None:
            self.status = wait_status(result)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; whether it has."""
        return bool(select.select([self.fd], [], [], timeout)[0])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def pid_of(pidfd: int) -> int:
    """The pid a pidfd names (for log lines), from /proc/self/fdinfo; -1 once it has ended."""
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    return -1


def wait_status(result: os.waitid_result) -> int:
    """A waitid() result as the wait status waitpid() would have given."""
    if result.si_code == os.CLD_EXITED:
        return (result.si_status & 0xFF) << 8
    core = 0x80 if result.si_code == os.CLD_DUMPED else 0
    return (result.si_status & 0x7F) | core


def reap_strays(known: Collection[int]) -> None:
    """Reap a child that ended and that no handle covers (a mid orphaned by the zygote's death).

    Only a zombie is looked at, and a zombie's number cannot be reused until it is reaped, so
    the pid read here names it until then. An init whose "pid" report is still unread is not
    in ``known`` yet; it is told apart by its second pid, the one of its own namespace.
    """
    while True:
        try:
            peek = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if peek is None or peek.si_pid in known or _is_namespace_init(peek.si_pid):
            return
        try:
            os.waitid(os.P_PID, peek.si_pid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return
        log.warning("reaped process %d, a stray child (status %d)", peek.si_pid, peek.si_status)


def _is_namespace_init(pid: int) -> bool:
    """Whether zombie ``pid`` is PID 1 of a namespace of its own (an init): its NSpid line
    holds two numbers."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return len(line.split()) > 2
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ESRCH):
            raise
    return True  # unknown: leave it; the next look decides
