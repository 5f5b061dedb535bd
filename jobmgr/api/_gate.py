"""The connection gate: no peer address holds more than ``connections_per_peer`` connections.

gRPC core caps the server's connections as a whole (``grpc.max_allowed_incoming_connections``)
but not per peer (its connection quota is handed the peer and ignores it), and grpcio offers
no way to vet a socket before gRPC takes it. One host could then hold every connection the
server allows and lock everyone else out before showing a certificate.

So the gate, a thread of the server, counts the connections gRPC has accepted on the port,
per peer (``_census``: this process's own fds), and shuts down the newest connections of any
peer over its limit, through gRPC's own fd: gRPC reads end-of-file and closes them. Nothing is
relayed; the bytes of the connections it lets be never pass through this code. It counts when
a connection arrives (edge-triggered epoll on duplicates of gRPC's listening sockets, which
only wakes it), within milliseconds, so as a rule before the newcomer's TLS handshake ends;
and, since such a wake-up can be lost, every SWEEP too.

A peer is an IPv4 address, or the /64 prefix of an IPv6 address (one host is usually given
a whole /64). One line per limit and window says what was closed (see ``_ratelog``).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections import defaultdict

from ._census import Census, Connection, address_text, dup_socket, shut_down
from ._limits import ConnectionLimits
from ._ratelog import LogThrottle

log = logging.getLogger("jobmgr.limits")

# Seconds between counts. A wake-up can be lost (epoll polls the listener again before it
# reports it, and gRPC may have accepted the newcomer by then: measured, 4 of 10 arrivals
# 10 ms apart woke no one), so the gate counts every SWEEP anyway, and every BUSY for a while
# after an arrival or an excess. The pace slows so that counting (3 ms for 2 000 connections,
# 50 us for 30) takes at most SWEEP_SHARE of a CPU, or BUSY_SHARE while under a flood.
SWEEP, SWEEP_SHARE = 0.25, 0.01
BUSY, BUSY_SHARE = 0.01, 0.2
BUSY_FOR = 0.25


class GateError(RuntimeError):
    """The gate cannot watch the server's port."""


def peer_key(raw: bytes) -> bytes:
    """What the per-peer limit counts by: the IPv4 address, or the IPv6 /64 prefix."""
    return raw[:8] if len(raw) == 16 else raw


def peer_text(key: bytes) -> str:
    return address_text(key) if len(key) == 4 else address_text(key + bytes(8)) + "/64"


class ConnectionGate:
    """Enforces ``connections_per_peer`` on the TCP listeners of ``port`` in this process."""

    def __init__(self, port: int, limits: ConnectionLimits) -> None:
        self._limits = limits
        self._listeners = _listening_sockets(port)
        if not self._listeners:
            raise GateError(f"no listening socket on port {port} in this process")
        self._census = Census(port)
        self._throttle = LogThrottle()
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe()
        self._epoll.register(self._wake_read, select.EPOLLIN)
        for listener in self._listeners:
            self._epoll.register(listener.fileno(), select.EPOLLIN | select.EPOLLET)
        self._thread = threading.Thread(target=self._run, name="jobmgr-gate", daemon=True)
        self.closed_total = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and let go of the listening sockets' duplicates (so that the port is
        closed once gRPC closes its own)."""
        os.write(self._wake_write, b"x")
        self._thread.join(10)
        self._epoll.close()
        for fd in (self._wake_read, self._wake_write):
            os.close(fd)
        for listener in self._listeners:
            listener.close()

    def _run(self) -> None:
        timeout, busy_until = SWEEP, 0.0
        while True:
            events = self._epoll.poll(timeout)
            if any(fd == self._wake_read for fd, _ in events):
                return
            began = time.monotonic()
            try:
                excess = self.check()
            except OSError as exc:
                log.error("the connection gate cannot count connections: %s", exc)
                excess = False
            now = time.monotonic()
            if events or excess:
                busy_until = now + BUSY_FOR
            pace, share = (BUSY, BUSY_SHARE) if now < busy_until else (SWEEP, SWEEP_SHARE)
            timeout = max(pace, (now - began) / share)
            for limit, count in self._throttle.overdue():
                _log(limit, getattr(self._limits, str(limit)), not_logged=count)

    def check(self) -> bool:
        """Count the port's connections and close each peer's excess, the newest first; True
        if some peer was over its limit."""
        held = self._census.take()
        by_peer: dict[bytes, list[Connection]] = defaultdict(list)
        for connection in held:
            by_peer[peer_key(connection.peer)].append(connection)
        if len(held) >= self._limits.max_connections:
            self._note("max_connections", peers=len(by_peer), open=len(held))
        cap = self._limits.connections_per_peer
        over = False
        for key, connections in by_peer.items():
            if len(connections) <= cap:
                continue
            over = True
            newest = sorted(connections, key=lambda c: c.inode, reverse=True)
            closed = sum(shut_down(c) for c in newest[: len(connections) - cap])
            self.closed_total += closed
            self._note(
                "connections_per_peer", peer=peer_text(key), open=len(connections), closed=closed
            )
        return over

    def _note(self, limit: str, **fields: object) -> None:
        held_back = self._throttle.admit(limit)
        if held_back is not None:
            _log(limit, getattr(self._limits, limit), not_logged=held_back, **fields)


def _log(limit: object, cap: int, *, not_logged: int = 0, **fields: object) -> None:
    message = "connections closed" if limit == "connections_per_peer" else "connections full"
    record: dict[str, object] = {"limit": limit, "max": cap, **fields}
    if not_logged:
        record["not_logged"] = not_logged
    log.warning(message, extra={"fields": record})


def _listening_sockets(port: int) -> list[socket.socket]:
    """Duplicates of this process's TCP sockets listening on ``port``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        sock = dup_socket(int(name))
        if sock is None:
            continue
        try:
            matches = (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                and sock.getsockname()[1] == port
            )
        except OSError:
            matches = False
        if matches:
            found.append(sock)
        else:
            sock.close()
    return found
