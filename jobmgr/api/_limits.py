"""How much of the server one peer, one connection or one caller may hold, and who enforces it.

Every connection and every RPC costs the server file descriptors (a socket; an Output stream
also holds its job's log open), and the process has a fixed number of them. Without caps,
1 100 bare TCP connections, or 1 100 Output streams from a read-only certificate, used up a
server whose limit was 1 024 and locked every other client out. The caps come in two layers:

| limit | held by | past it |
| --- | --- | --- |
| ``max_connections`` | gRPC core (``grpc.max_allowed_incoming_connections``) | closed on accept |
| ``connections_per_peer`` | jobmgr's connection gate (``_gate``) | the newest closed |
| ``handshake_timeout`` | gRPC core (``grpc.server_handshake_timeout_ms``) | closed |
| ``idle_timeout`` | gRPC core (``grpc.max_connection_idle_ms``) | GOAWAY |
| ``streams_per_connection`` | gRPC core (``grpc.max_concurrent_streams``) | client waits |
| ``streams_per_caller`` | jobmgr's admission interceptor (``_admission``) | RESOURCE_EXHAUSTED |
| ``rpcs_in_flight`` | admission (and grpcio's own cap, at twice it) | RESOURCE_EXHAUSTED |

Defaults come from the file descriptor limit: ``for_fd_limit`` keeps headroom for what the
server always needs, gives half of the rest to connections and half to RPCs, and lets no one
peer address or caller take more than an eighth of either.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from typing import Any

# Fds the server holds whatever its load: listening sockets, epoll and wake-up fds of gRPC's
# threads, SQLite's database, journal and lock, the launcher socket, stdio: 19 measured idle.
BASE_FDS = 64
# Beyond that, a sixteenth is kept back for what grows with time (Starts in progress, logs).
HEADROOM_SHARE = 16
SHARE_PER_PEER = 8
# Past these, more connections or calls would not be served better: one Python process
# answers them, and each connection costs gRPC buffers (about 100 KiB while busy).
MOST_CONNECTIONS = 4096
MOST_RPCS = 4096

HANDSHAKE_TIMEOUT = 5.0
IDLE_TIMEOUT = 300.0
STREAMS_PER_CONNECTION = 100
# Keepalive: the server pings a connection with calls open every KEEPALIVE_TIME and drops it
# if no answer comes within KEEPALIVE_TIMEOUT, so a client that vanished without a word does
# not keep its streams (and their fds) for good. A client may ping at most every
# MIN_CLIENT_PING_INTERVAL while no data flows; the third ping too soon ends its connection.
KEEPALIVE_TIME = 60.0
KEEPALIVE_TIMEOUT = 20.0
MIN_CLIENT_PING_INTERVAL = 10.0
MAX_PING_STRIKES = 2


def fd_limit() -> int:
    """This process's soft RLIMIT_NOFILE."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the soft limit it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = _nr_open()
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1024 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    """The caps on what clients may hold at once (see the table in this module's docstring).

    Durations are in seconds. Every count is at least 1; ``ValueError`` says which is not.
    """

    max_connections: int
    connections_per_peer: int
    rpcs_in_flight: int
    streams_per_caller: int
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    streams_per_connection: int = STREAMS_PER_CONNECTION

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            counts = name not in ("handshake_timeout", "idle_timeout")
            if (counts and not isinstance(value, int)) or isinstance(value, bool) or value <= 0:
                what = "a whole number >= 1" if counts else "a duration > 0"
                raise ValueError(f"{name} must be {what}, got {value!r}")

    @classmethod
    def for_fd_limit(cls, fds: int, **given: Any) -> ConnectionLimits:
        """Defaults for a process that may hold ``fds`` file descriptors; ``given`` fields
        (those not None) take the place of the defaults."""
        spare = max(2, fds - BASE_FDS - fds // HEADROOM_SHARE)
        connections = min(MOST_CONNECTIONS, max(1, spare // 2))
        rpcs = min(MOST_RPCS, max(1, spare // 2))
        defaults: dict[str, Any] = {
            "max_connections": connections,
            "connections_per_peer": max(1, connections // SHARE_PER_PEER),
            "rpcs_in_flight": rpcs,
            "streams_per_caller": max(1, rpcs // SHARE_PER_PEER),
        }
        defaults.update({name: value for name, value in given.items() if value is not None})
        return cls(**defaults)

    def grpc_options(self) -> list[tuple[str, int]]:
        """The gRPC core channel arguments that hold this server's share of the limits."""
        return [
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.server_handshake_timeout_ms", _ms(self.handshake_timeout)),
            ("grpc.max_connection_idle_ms", _ms(self.idle_timeout)),
            ("grpc.max_concurrent_streams", self.streams_per_connection),
            ("grpc.keepalive_time_ms", _ms(KEEPALIVE_TIME)),
            ("grpc.keepalive_timeout_ms", _ms(KEEPALIVE_TIMEOUT)),
            # grpcio 1.85 waits for a keepalive ping's answer this long (1 minute unset),
            # whatever keepalive_timeout_ms says: measured, only this one closes a silent peer.
            ("grpc.http2.ping_timeout_ms", _ms(KEEPALIVE_TIMEOUT)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", _ms(MIN_CLIENT_PING_INTERVAL)),
            ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ]

    @property
    def grpc_rpc_cap(self) -> int:
        """grpcio's ``maximum_concurrent_rpcs``: a backstop above ``rpcs_in_flight``, so the
        admission interceptor, which names the limit and logs, is the one callers meet."""
        return 2 * self.rpcs_in_flight

    def describe(self) -> str:
        """``name=value`` pairs, for the server's start-up log line."""
        return " ".join(f"{name}={value:g}" for name, value in asdict(self).items())


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
