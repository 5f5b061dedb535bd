"""jobmgr.client: start, follow, stop and inspect jobs on a jobmgr server from Python.

    from jobmgr.client import Client, JobSpec, Limits

    with Client.from_env() as jobs:                   # the server jobmgr-client would use
        code = jobs.run(["make", "test"])             # its output on ours; its exit status
        job_id = jobs.start(JobSpec(["./crunch"], limits=Limits(memory_bytes=256 << 20)))
        for chunk in jobs.output(job_id[:8]):         # a unique prefix is enough
            print(chunk.stream.name, chunk.data)
        print(jobs.status(job_id).exit_status)

``AsyncClient`` is the same for asyncio (``async with AsyncClient.from_env() as jobs``).
``Client(address, ca, cert, key)`` names a server and files outright; ``from_env`` finds them
as ``jobmgr-client`` does (``Settings``: flags, then contexts and JOBMGR_* variables, then
``./certs``). Results are frozen dataclasses; failures are ``JobmgrError`` subclasses, one
per kind of failure, never a gRPC exception. ``output`` resumes a stream that drops from the
first byte it has not handed out, so each byte of the job's output comes exactly once.

Process-wide effects (all of them):

- Importing this package imports ``jobmgr.api``, which, if ``grpc`` is not imported yet,
  sets ``GRPC_SSL_CIPHER_SUITES`` in ``os.environ`` to a TLS 1.2 suite gRPC can never
  negotiate. gRPC reads that variable once, at its own import, so every gRPC TLS connection
  this process makes is TLS 1.3 only, to jobmgr servers and any other. To keep TLS 1.2 for
  other gRPC servers, import ``grpc`` before ``jobmgr.client``: nothing is changed then
  (``tls13_floor_active()`` says which happened) and jobmgr servers still refuse TLS 1.2 on
  their side.
- ``Client`` and ``AsyncClient`` load ``grpc`` (its threads start with the first connection)
  and ``protobuf``; the other names load neither (they are imported on first use).
- Nothing else: no signal handlers, no logging configuration (reconnections are logged as
  warnings on the ``jobmgr.client`` logger), no environment read except by ``from_env``
  (``XDG_CONFIG_HOME``, ``HOME``, ``JOBMGR_*``).
"""

# First, before anything here imports grpc: see "Process-wide effects" above.
import jobmgr.api  # noqa: F401  # isort: skip

import importlib
from typing import TYPE_CHECKING, Any

from jobmgr.api import tls13_floor_active

if TYPE_CHECKING:
    from ._aclient import AsyncClient, AsyncOutputReader
    from ._client import Client, OutputReader
    from ._errors import (
        AmbiguousJobId,
        CannotStart,
        CommandNotFound,
        ConfigError,
        ConnectionFailed,
        InvalidRequest,
        JobLost,
        JobmgrError,
        JobNotFound,
        NotExecutable,
        PermissionDenied,
        ServerBusy,
        ServerError,
        Unauthenticated,
    )
    from ._settings import Settings
    from ._types import JobSpec, JobState, JobStatus, Limits, Mount, OutputChunk, Stream

# Name -> module: loaded on first use, so that Settings and the types cost no grpc import.
_LAZY = {
    "AsyncClient": "._aclient",
    "AsyncOutputReader": "._aclient",
    "Client": "._client",
    "OutputReader": "._client",
    "Settings": "._settings",
    "AmbiguousJobId": "._errors",
    "CannotStart": "._errors",
    "CommandNotFound": "._errors",
    "ConfigError": "._errors",
    "ConnectionFailed": "._errors",
    "InvalidRequest": "._errors",
    "JobLost": "._errors",
    "JobmgrError": "._errors",
    "JobNotFound": "._errors",
    "NotExecutable": "._errors",
    "PermissionDenied": "._errors",
    "ServerBusy": "._errors",
    "ServerError": "._errors",
    "Unauthenticated": "._errors",
    "JobSpec": "._types",
    "JobState": "._types",
    "JobStatus": "._types",
    "Limits": "._types",
    "Mount": "._types",
    "OutputChunk": "._types",
    "Stream": "._types",
}

__all__ = [
    "AmbiguousJobId",
    "AsyncClient",
    "AsyncOutputReader",
    "CannotStart",
    "Client",
    "CommandNotFound",
    "ConfigError",
    "ConnectionFailed",
    "InvalidRequest",
    "JobLost",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStatus",
    "JobmgrError",
    "Limits",
    "Mount",
    "NotExecutable",
    "OutputChunk",
    "OutputReader",
    "PermissionDenied",
    "ServerBusy",
    "ServerError",
    "Settings",
    "Stream",
    "Unauthenticated",
    "tls13_floor_active",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
