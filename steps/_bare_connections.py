"""Bare TCP clients for the connection-limit scenarios of features/hardening.feature: they
connect, maybe send a few bytes, and watch whether and when the server closes them. Loopback
only; the flood comes from its own address (127.0.0.2, one more loopback address the kernel
answers for), so the clients the scenario measures, on 127.0.0.1 and ::1, are other peers."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

FLOOD_SOURCE = "127.0.0.2"
# The first bytes of a TLS ClientHello: a record header and the start of its body.
HALF_CLIENT_HELLO = bytes.fromhex("160301020001") + b"\x00" * 16


def connect(port: int, source: str = FLOOD_SOURCE, target: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((source, 0))
        sock.connect((target, port))
    except OSError:
        sock.close()
        raise
    return sock


@contextmanager
def held(port: int, count: int, source: str = FLOOD_SOURCE) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` that send nothing, closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(connect(port, source))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed (or reset) ``sock``, without waiting."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def closed_at(socks: Iterable[socket.socket], within: float) -> dict[socket.socket, float]:
    """For each socket the server closes within ``within`` seconds, how long that took."""
    began = time.monotonic()
    pending = list(socks)
    closed: dict[socket.socket, float] = {}
    while pending and time.monotonic() - began < within:
        for sock in [s for s in pending if is_closed(s)]:
            closed[sock] = time.monotonic() - began
            pending.remove(sock)
        time.sleep(0.005)
    return closed
