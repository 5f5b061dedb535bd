"""One log record per RPC: method, peer address, caller, role, job id, status code, duration.

Logged to the ``jobmgr.rpc`` logger at INFO, with the fields in ``record.fields`` for a
formatter to render (text or JSON, see jobmgr.cli); a failed call adds its error message.
Nothing secret is in them: the caller is named by its certificate's CN and O, never by the
certificate or anything of its key; commands and environments are not logged (an error
message may name the program that could not be run).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from typing import Any

import grpc

from ._auth import NotAuthenticated, identify
from ._handlers import Behaviour, WrappingInterceptor, as_async_iter, as_awaited

log = logging.getLogger("jobmgr.rpc")


class CallLog(WrappingInterceptor):
    """Logs every RPC once it has ended, however it ended. Put it first, so that it also
    sees the calls the access guard refuses."""

    def wrap(self, method: str, behaviour: Behaviour, handler: Any) -> Behaviour:
        return _logged(method, behaviour, handler)


def _logged(method: str, behaviour: Behaviour, handler: Any) -> Behaviour:
    # The caller is read when the call begins. Once a call is cancelled its context must not
    # be touched again: grpc may have freed the call under it (reading auth_context() from a
    # cancelled stream's cleanup crashed the server).
    if handler.response_streaming:

        async def logged_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(method, context, _job_of(request))
            try:
                async for response in as_async_iter(behaviour(request, context)):
                    yield response
                call.ended(context)
            except (asyncio.CancelledError, GeneratorExit):
                call.cancelled()
                raise
            except BaseException:
                call.ended(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                call.log()

        return logged_stream

    async def logged_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, context, _job_of(request))
        try:
            response = await as_awaited(behaviour(request, context))
            call.job = call.job or _job_of(response)  # Start: the new job's id
            call.ended(context)
            return response
        except asyncio.CancelledError:
            call.cancelled()
            raise
        except BaseException:
            call.ended(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            call.log()

    return logged_unary


class _Call:
    """What the log line of one call says, gathered while the call is alive."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext, job: str) -> None:
        self.began = time.monotonic()
        self.method, self.job = method, job
        self.peer = peer_of(context)
        self.code, self.error = grpc.StatusCode.OK, ""
        try:
            caller = identify(context.auth_context())
            self.caller, self.role = caller.name, caller.role or ",".join(caller.roles)
        except NotAuthenticated:
            self.caller, self.role = "", ""

    def ended(
        self, context: grpc.aio.ServicerContext, default: grpc.StatusCode = grpc.StatusCode.OK
    ) -> None:
        """The handler returned or raised: the code it set or aborted with, and why."""
        self.code = _code_set(context) or default
        if self.code is not grpc.StatusCode.OK:
            details = context.details()
            if isinstance(details, bytes):
                details = details.decode(errors="replace")
            self.error = details or ""

    def cancelled(self) -> None:
        self.code = grpc.StatusCode.CANCELLED

    def log(self) -> None:
        fields = {
            "method": self.method,
            "peer": self.peer,
            "caller": self.caller,
            "role": self.role,
            "job": self.job,
            "code": self.code.name,
            "duration_ms": round((time.monotonic() - self.began) * 1000, 1),
        }
        if self.error:
            fields["error"] = self.error
        log.info("rpc", extra={"fields": fields})


def peer_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's address as gRPC names it, ``ipv4:127.0.0.1:5000`` or ``ipv6:[::1]:5000``
    (gRPC percent-encodes the brackets)."""
    return urllib.parse.unquote(context.peer() or "")


def _code_set(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    """The code the handler set or aborted with, if any."""
    code = context.code()
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)


# context.code() may give the code's number rather than the enum member.
_BY_VALUE = {status.value[0]: status for status in grpc.StatusCode}


def _job_of(message: Any) -> str:
    uuid = getattr(message, "uuid", "")
    return uuid if isinstance(uuid, str) else ""
