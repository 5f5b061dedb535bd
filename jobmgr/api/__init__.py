"""jobmgr.api: the worker library behind a gRPC service with mutual TLS 1.3 and roles.

Server side:

    worker = Worker("/var/lib/jobmgr")
    server = JobServer(worker, ServerTLS.from_files("ca.pem", "server.pem", "server.key"))
    await server.start()

Client side: ``job_pb2``/``job_pb2_grpc`` (the generated messages and stub),
``channel_credentials``, ``DEFAULT_PORT``, ``MAX_MESSAGE_BYTES`` and the keepalive settings;
these do not load the worker library. ``jobmgr.client`` is the client library built on them.

Importing this package first makes gRPC refuse TLS 1.2 in this process (see ``_tls``): that
has to happen before ``grpc`` is imported, so this module imports nothing of grpc itself and
loads the server parts on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._tls import TLSFloorError, channel_credentials, set_tls13_floor, tls13_floor_active
from ._wire import DEFAULT_PORT, KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS, MAX_MESSAGE_BYTES

set_tls13_floor(only_if_possible=True)

if TYPE_CHECKING:
    from ._auth import CALL_NAMES, DEFAULT_ROLES, ROLE_POLICY, Caller, role_policy
    from ._guard import AccessGuard
    from ._limits import ConnectionLimits, raise_fd_limit
    from ._proto import job_pb2, job_pb2_grpc
    from ._ratelog import LogThrottle
    from ._server import BindError, JobServer, ServerTLS
    from ._service import JobVisibility
    from ._trust import ClientTrust, CRLError

_LAZY = {
    "AccessGuard": "._guard",
    "job_pb2": "._proto",
    "job_pb2_grpc": "._proto",
    "CALL_NAMES": "._auth",
    "DEFAULT_ROLES": "._auth",
    "ROLE_POLICY": "._auth",
    "role_policy": "._auth",
    "JobVisibility": "._service",
    "ClientTrust": "._trust",
    "CRLError": "._trust",
    "Caller": "._auth",
    "ConnectionLimits": "._limits",
    "raise_fd_limit": "._limits",
    "LogThrottle": "._ratelog",
    "BindError": "._server",
    "JobServer": "._server",
    "ServerTLS": "._server",
}

__all__ = [
    "CALL_NAMES",
    "DEFAULT_PORT",
    "DEFAULT_ROLES",
    "KEEPALIVE_MS",
    "KEEPALIVE_TIMEOUT_MS",
    "MAX_MESSAGE_BYTES",
    "ROLE_POLICY",
    "AccessGuard",
    "BindError",
    "CRLError",
    "Caller",
    "ClientTrust",
    "ConnectionLimits",
    "JobServer",
    "JobVisibility",
    "LogThrottle",
    "ServerTLS",
    "TLSFloorError",
    "channel_credentials",
    "job_pb2",
    "job_pb2_grpc",
    "raise_fd_limit",
    "role_policy",
    "set_tls13_floor",
    "tls13_floor_active",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == "._proto":
        return importlib.import_module(f"{module}.{name}", __name__)
    return getattr(importlib.import_module(module, __name__), name)
