"""jobmgr-server's flags for its connection limits (what each one caps: docs/usage.md)."""

from __future__ import annotations

from typing import Any

from ._config import ServerConfig, parse_count
from ._units import format_duration, parse_duration


def add_connection_flags(add: Any, arg: Any) -> None:
    """Add the connection-limit flags with ``add`` (jobmgr-server's adder: a flag's value stays
    None unless given); ``arg`` wraps a parser into an argparse type."""
    derived = "derived from the fd limit"
    count = arg(parse_count)
    add(
        "--max-connections",
        type=count,
        metavar="N",
        default=derived,
        help="connections held at once; past it a new one is closed as soon as it is accepted",
    )
    add(
        "--connections-per-peer",
        type=count,
        metavar="N",
        default=derived,
        help="connections one peer address (IPv6: one /64) may hold; past it the newest is "
        "closed, as a rule before its TLS handshake ends",
    )
    add(
        "--handshake-timeout",
        type=arg(parse_duration),
        metavar="DURATION",
        default=format_duration(ServerConfig.handshake_timeout),
        help="time a new connection has to finish TLS and start HTTP/2, or it is closed",
    )
    add(
        "--idle-timeout",
        type=arg(parse_duration),
        metavar="DURATION",
        default=format_duration(ServerConfig.idle_timeout),
        help="a connection with no call in progress this long is closed (HTTP/2 GOAWAY)",
    )
    add(
        "--streams-per-connection",
        type=count,
        metavar="N",
        default=ServerConfig.streams_per_connection,
        help="calls one connection may have open at once (HTTP/2 MAX_CONCURRENT_STREAMS)",
    )
    add(
        "--streams-per-caller",
        type=count,
        metavar="N",
        default=derived,
        help="streams (Output, health Watch, reflection) one certificate identity may have "
        "open at once; past it RESOURCE_EXHAUSTED",
    )
    add(
        "--rpcs-in-flight",
        type=count,
        metavar="N",
        default=derived,
        help="calls in progress on the whole server; past it RESOURCE_EXHAUSTED",
    )
