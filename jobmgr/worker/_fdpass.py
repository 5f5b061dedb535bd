"""File descriptors across the launcher's socket (SCM_RIGHTS), in step with the frames.

A frame that carries descriptors says how many in its "fds" field, and they are sent with the
frame's first byte. The kernel hands them over no later than that byte, and never merges two
sendmsg() calls' descriptors into one recvmsg(), so the receiver keeps them in one queue in
arrival order and each frame takes its count from the front. A descriptor the receiver could
not accept (MSG_CTRUNC: its file table was full) would put every later frame out of step, so
the connection is dropped instead.
"""

from __future__ import annotations

import array
import os
import socket
from collections import deque

from ._shim import ProtocolError

MAX_FDS = 253  # SCM_MAX_FD: the kernel's limit per message
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


def rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    """The ancillary data that passes ``fds``."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def send_all(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """Send ``data`` on a blocking socket, ``fds`` with its first byte."""
    sent = sock.sendmsg([data], rights(fds)) if fds else 0
    if sent < len(data):
        sock.sendall(data[sent:])


class DescriptorsDropped(ProtocolError):
    """The receiver's file table was full: descriptors sent to it were lost."""


def receive(sock: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """Up to ``size`` bytes and the descriptors that came with them (close-on-exec)."""
    data, ancillary, flags, _ = sock.recvmsg(size, _ANCILLARY, socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise DescriptorsDropped(
            "descriptors sent on the launcher's socket were dropped: this process has no file"
            " descriptors left (raise its RLIMIT_NOFILE, e.g. LimitNOFILE= in its unit)"
        )
    return data, fds


class FdQueue:
    """The descriptors received and not yet taken by a frame, oldest first."""

    def __init__(self) -> None:
        self._fds: deque[int] = deque()

    def add(self, fds: list[int]) -> None:
        self._fds.extend(fds)

    def take(self, count: int) -> list[int]:
        if count > len(self._fds):
            raise ProtocolError(f"a frame says it carries {count} descriptors; fewer came")
        return [self._fds.popleft() for _ in range(count)]

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popleft())


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
