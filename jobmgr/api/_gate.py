"""The connection gate: no peer address holds more than ``connections_per_peer`` connections.

gRPC core caps the server's connections as a whole (``grpc.max_allowed_incoming_connections``)
but not per peer (its connection quota is handed the peer and ignores it), and grpcio offers
no way to vet a socket before gRPC takes it. One host could then hold every connection the
server allows and lock everyone else out before showing a certificate.

So the gate watches gRPC's own listening sockets, in this process, for new connections
(edge-triggered epoll on duplicates of their fds: a wake-up per arrival, nothing else read
or written), counts the port's connections per peer with one sock_diag query, and shuts down
the newest connections of any peer over its limit, through gRPC's own fd (checked by
address first), within milliseconds of their arrival and before their TLS handshake can end.
gRPC reads end-of-file and closes them. Nothing is relayed: the bytes of the connections
it lets be never pass through this code.

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
from collections import Counter, defaultdict
from collections.abc import Iterable

from ._limits import ConnectionLimits
from ._ratelog import LogThrottle
from ._sockdiag import Connection, address_text, connections_on

log = logging.getLogger("jobmgr.limits")

# Seconds between counts. A wake-up can be lost (epoll polls the listener again before it
# reports it, and gRPC may have accepted the newcomer by then: measured, 4 of 10 arrivals 10 ms
# apart woke no one), so the gate also counts at a steady pace, and much faster for a while
# after any arrival or excess. Counting 2 000 connections takes about 8 ms: the pace slows so
# that counting takes at most a small share of a CPU, a larger one while under a flood.
SWEEP, SWEEP_SHARE = 0.1, 0.02
BUSY, BUSY_SHARE = 0.01, 0.2
BUSY_FOR = 0.25


class GateError(RuntimeError):
    """The gate cannot watch the server's port."""


def peer_key(raw: bytes) -> bytes:
    """What the per-peer limit counts by: the IPv4 address, or the IPv6 /64 prefix."""
    if len(raw) == 16 and raw.startswith(b"\x00" * 10 + b"\xff\xff"):
        return raw[12:]
    return raw[:8] if len(raw) == 16 else raw


def peer_text(key: bytes) -> str:
    return address_text(key) if len(key) == 4 else address_text(key + bytes(8)) + "/64"


class ConnectionGate:
    """Enforces ``connections_per_peer`` on the TCP listeners of ``port`` in this process."""

    def __init__(self, port: int, limits: ConnectionLimits) -> None:
        self._port = port
        self._limits = limits
        self._listeners = _listening_sockets(port)
        if not self._listeners:
            raise GateError(f"no listening socket on port {port} in this process")
        self._locals = {_raw_address(s) for s in self._listeners}
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
        timeout, busy_until, cost = SWEEP, 0.0, 0.0
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
            cost = now - began
            if events or excess:
                busy_until = now + BUSY_FOR
            pace, share = (BUSY, BUSY_SHARE) if now < busy_until else (SWEEP, SWEEP_SHARE)
            timeout = max(pace, cost / share)
            for limit, count in self._throttle.overdue():
                _log(limit, getattr(self._limits, str(limit)), not_logged=count)

    def check(self) -> bool:
        """Count the port's connections and close each peer's excess; True if some peer was
        over its limit."""
        held = [c for c in connections_on(self._port) if self._ours(c)]
        by_peer: dict[bytes, list[Connection]] = defaultdict(list)
        for connection in held:
            by_peer[peer_key(connection.peer)].append(connection)
        if len(held) >= self._limits.max_connections:
            self._note("max_connections", peers=len(by_peer), open=len(held))
        cap = self._limits.connections_per_peer
        excess: dict[bytes, list[Connection]] = {}
        for key, connections in by_peer.items():
            if len(connections) > cap:
                # The newest go: an inode is handed out in increasing order, and a connection
                # not yet accepted (inode 0) is newer than any accepted one.
                newest = sorted(connections, key=lambda c: c.inode or 2**64, reverse=True)
                excess[key] = newest[: len(connections) - cap]
        if not excess:
            return False
        closed = _shut_down(c for victims in excess.values() for c in victims if c.inode)
        self.closed_total += sum(closed.values())
        for key in excess:
            self._note(
                "connections_per_peer",
                peer=peer_text(key),
                open=len(by_peer[key]),
                closed=closed.get(key, 0),
            )
        return True

    def _ours(self, connection: Connection) -> bool:
        return connection.local in self._locals or any(not any(a) for a in self._locals)

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


def _shut_down(victims: Iterable[Connection]) -> Counter[bytes]:
    """Shut down the sockets of ``victims`` through this process's fds; how many, per peer."""
    wanted = {f"socket:[{c.inode}]": c for c in victims}
    closed: Counter[bytes] = Counter()
    if not wanted:
        return closed
    for entry in os.scandir("/proc/self/fd"):
        try:
            victim = wanted.get(os.readlink(entry.path))
        except OSError:
            continue  # closed meanwhile
        if victim is None:
            continue
        try:
            sock = socket.socket(fileno=os.dup(int(entry.name)))
        except OSError:
            continue
        with sock:
            # The fd may have been closed and reused since it was read: act only on the
            # connection counted.
            try:
                peer = sock.getpeername()
            except OSError:
                continue
            if _raw(peer[0]) == victim.peer and peer[1] == victim.peer_port:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    continue
                closed[peer_key(victim.peer)] += 1
    return closed


def _listening_sockets(port: int) -> list[socket.socket]:
    """Duplicates of this process's TCP sockets listening on ``port``."""
    found = []
    for entry in os.scandir("/proc/self/fd"):
        try:
            if not os.readlink(entry.path).startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(entry.name)))
        except OSError:
            continue
        try:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            matches = (
                listening
                and sock.type == socket.SOCK_STREAM
                and sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.getsockname()[1] == port
            )
        except OSError:
            matches = False
        if matches:
            found.append(sock)
        else:
            sock.close()
    return found


def _raw_address(sock: socket.socket) -> bytes:
    return _raw(sock.getsockname()[0])


def _raw(text: str) -> bytes:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(family, text.split("%")[0])
