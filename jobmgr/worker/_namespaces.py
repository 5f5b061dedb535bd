"""Isolation steps: each names the namespace it unshares and what PID 1 sets up inside it.

A new isolation step is one new class added to ``STEPS``; the launcher ORs the flags together
and unshares them in one call, then the in-namespace init runs every step's ``inside()`` before
it starts the job.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from typing import Protocol

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    _check(
        _libc.mount(
            source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None
        ),
        f"mount {target}",
    )


class IsolationStep(Protocol):
    """One namespace: its clone flag, and the set-up PID 1 does inside it."""

    @property
    def flag(self) -> int:
        """The CLONE_NEW* flag of this namespace."""

    def inside(self) -> None:
        """Runs as PID 1 inside the new namespaces, before the job is started."""


class PidNamespace:
    """The job's processes see only each other; the init is PID 1."""

    flag = CLONE_NEWPID

    def inside(self) -> None:
        pass


class MountNamespace:
    """Mounts made by the job stay inside it; /proc shows the job's own PID namespace."""

    flag = CLONE_NEWNS

    def inside(self) -> None:
        # Without MS_PRIVATE, mounts propagate back to the host through shared peer groups.
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


class NetworkNamespace:
    """No interfaces but a loopback that works."""

    flag = CLONE_NEWNET

    def inside(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            ifreq = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


class UtsNamespace:
    """A hostname the job may change without touching the host's."""

    flag = CLONE_NEWUTS

    def inside(self) -> None:
        pass


class IpcNamespace:
    """System V IPC and POSIX message queues of its own."""

    flag = CLONE_NEWIPC

    def inside(self) -> None:
        pass


# Order matters for inside(): /proc can only be remounted once the mount namespace is private.
STEPS: tuple[IsolationStep, ...] = (
    PidNamespace(),
    MountNamespace(),
    NetworkNamespace(),
    UtsNamespace(),
    IpcNamespace(),
)


def unshare_all() -> None:
    """Unshare every step's namespace for the calling process (its next child is PID 1)."""
    flags = 0
    for step in STEPS:
        flags |= step.flag
    _check(_libc.unshare(flags), "unshare")


def set_up_inside() -> None:
    """Run by PID 1: every step's set-up, in order."""
    for step in STEPS:
        step.inside()
