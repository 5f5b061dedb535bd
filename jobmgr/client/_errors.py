"""The errors jobmgr.client raises, and the one place a gRPC status becomes one of them.

A failed call is classified by its status code, and by the reason the server puts in the
trailing metadata entry ``jobmgr-reason`` where the code alone is too coarse (a command not
found and one that cannot be executed are both FAILED_PRECONDITION). Never by the words of
its message: those are for people. Loads nothing of grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._types import JobStatus

REASON_KEY = "jobmgr-reason"  # jobmgr.api._mapping.REASON_KEY


class JobmgrError(Exception):
    """Base of every error jobmgr.client raises on purpose. ``code`` names the gRPC status
    code ("NOT_FOUND") when the server or gRPC gave one; None when the client found it."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ConfigError(JobmgrError):
    """The settings are wrong: the config file, a context, a variable, a flag, or a
    certificate file that cannot be read."""


class ConnectionFailed(JobmgrError):
    """The server could not be reached, or was gone for longer than the client waits for
    it to come back; the message says what was found (nothing listening, a TLS refusal...)."""


class Unauthenticated(JobmgrError):
    """The server does not accept this client certificate (revoked, another CA's)."""


class PermissionDenied(JobmgrError):
    """The certificate's role may not make this call."""


class JobNotFound(JobmgrError):
    """No job has this id (or none this caller may see), or no job's id starts so."""


class AmbiguousJobId(JobmgrError):
    """An id prefix that starts more than one job's id; ``candidates`` are some of them."""

    def __init__(self, message: str, candidates: tuple[str, ...]) -> None:
        super().__init__(message)
        self.candidates = candidates


class InvalidRequest(JobmgrError):
    """The server refused the request as malformed or out of range (a limit above its
    maximum, a user it does not allow, an offset past the output)."""


class CannotStart(JobmgrError):
    """The job could not be started (its user, its working directory, its command)."""


class CommandNotFound(CannotStart):
    """The command is not in the job's PATH."""


class NotExecutable(CannotStart):
    """The command exists but cannot be executed (no permission, not a program)."""


class ServerBusy(JobmgrError):
    """The server refuses new jobs for now (its max_running, a full disk), or any change to
    a job while its job launcher is down (UNAVAILABLE, answered by the server itself)."""


class ServerError(JobmgrError):
    """The server failed in a way the caller cannot fix (INTERNAL, UNKNOWN...)."""


class JobLost(JobmgrError):
    """``run`` followed a job that ended with no exit status: its supervisor died."""

    def __init__(self, message: str, status: JobStatus) -> None:
        super().__init__(message)
        self.status = status


_BY_CODE: dict[str, type[JobmgrError]] = {
    "UNAVAILABLE": ConnectionFailed,
    "DEADLINE_EXCEEDED": ConnectionFailed,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "NOT_FOUND": JobNotFound,
    "INVALID_ARGUMENT": InvalidRequest,
    "OUT_OF_RANGE": InvalidRequest,
    "FAILED_PRECONDITION": CannotStart,
    "RESOURCE_EXHAUSTED": ServerBusy,
}
_BY_REASON: dict[str, type[JobmgrError]] = {
    "COMMAND_NOT_FOUND": CommandNotFound,
    "NOT_EXECUTABLE": NotExecutable,
    "WORKER_UNAVAILABLE": ServerBusy,
}
# Codes after which a stream is worth resuming: the connection went (or the server is
# restarting), not the request. CANCELLED counts only when the client did not cancel.
RESUMABLE_CODES = frozenset({"UNAVAILABLE", "CANCELLED"})


def code_name(error: Any) -> str:
    """The status code's name of a grpc.RpcError (or grpc.aio.AioRpcError)."""
    code = error.code()
    return str(code.name) if code is not None else "UNKNOWN"


def answered(error: Any) -> bool:
    """Whether the server itself answered a failed call (it then says why, see REASON_KEY):
    an UNAVAILABLE it answered is no failure to connect."""
    return REASON_KEY in dict(error.trailing_metadata() or ())


def from_rpc(error: Any) -> JobmgrError:
    """The JobmgrError for a failed call (a grpc.RpcError or grpc.aio.AioRpcError)."""
    name = code_name(error)
    details = " ".join(str(error.details() or name).split())
    reason = dict(error.trailing_metadata() or ()).get(REASON_KEY)
    cls = _BY_REASON.get(reason or "") or _BY_CODE.get(name, ServerError)
    return cls(details, code=name)
