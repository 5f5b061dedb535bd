"""The one place every RPC passes through: TLS 1.3 check, then the certificate against the CA
and CRL in force, then the role, then the request's own validity (bytes that decode to no
request are INVALID_ARGUMENT), then the handler.

Every method of every service on the server (JobManager, health checking, reflection) is
guarded: the interceptor wraps each handler (see _handlers), whatever its kind.

The role policy and the client trust (CA and CRL) can be replaced while the server runs
(``update``, on a reload). A call is judged by those in force when it arrives; a stream that
is already open is judged again at once, and ends if it would not be let in now: with
UNAUTHENTICATED when its certificate no longer passes (revoked, or from a CA no longer
trusted), with PERMISSION_DENIED when its role may no longer make the call. It ends at once if
it is waiting for its next message, else as soon as the message being sent has gone, and is
cut off (CANCELLED) after ``STREAM_END_GRACE`` seconds if its client does not take that
message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import grpc

from ._auth import ROLE_POLICY, AccessDenied, Caller, NotAuthenticated, authorize, identify
from ._handlers import (
    Behaviour,
    UndecodableRequest,
    WrappingInterceptor,
    as_async_iter,
    as_awaited,
)
from ._tls import negotiated_tls13, negotiated_version
from ._trust import ClientTrust

STREAM_END_GRACE = 5.0


@dataclass(eq=False)
class _OpenStream:
    """A streaming call in progress, as the guard sees it."""

    method: str
    caller: Caller
    task: asyncio.Task[Any] | None
    waiting: bool = False  # awaiting its next message (not inside gRPC, sending one)
    ended: str = ""  # why it must end, once it must
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED  # and how
    _cutoff: asyncio.TimerHandle | None = field(default=None, repr=False)

    def end(self, code: grpc.StatusCode, reason: str) -> None:
        if self.ended or self.task is None:
            return
        self.code, self.ended = code, reason
        if self.waiting:
            self.task.cancel()  # lands in the guard's await, which answers UNAUTHENTICATED
        else:
            loop = self.task.get_loop()
            self._cutoff = loop.call_later(STREAM_END_GRACE, self.task.cancel)

    def close(self) -> None:
        if self._cutoff is not None:
            self._cutoff.cancel()


class AccessGuard(WrappingInterceptor):
    """Refuses every RPC that is not over TLS 1.3, whose certificate the CA and CRL in force
    do not let in, or whose caller's role may not make it."""

    lenient_requests = True

    def __init__(
        self,
        policy: Mapping[str, frozenset[str]] = ROLE_POLICY,
        trust: ClientTrust | None = None,
    ) -> None:
        super().__init__()
        self._policy = policy
        self._trust = trust
        self._streams: set[_OpenStream] = set()

    def update(self, policy: Mapping[str, frozenset[str]], trust: ClientTrust) -> int:
        """Judge calls by ``policy`` and ``trust`` from now on, and end the open streams these
        would refuse now; returns how many. Call it on the server's event loop."""
        self._policy, self._trust = policy, trust
        ending = 0
        for stream in list(self._streams):
            if stream.ended:
                continue
            refusal = trust.refusal(stream.caller)
            if refusal is not None:
                stream.end(grpc.StatusCode.UNAUTHENTICATED, refusal)
                ending += 1
                continue
            try:
                authorize(stream.caller, stream.method, policy)
            except AccessDenied as exc:
                stream.end(grpc.StatusCode.PERMISSION_DENIED, str(exc))
                ending += 1
        return ending

    def wrap(self, method: str, behaviour: Behaviour, handler: Any) -> Behaviour:
        if handler.response_streaming:

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                caller = await self._check(method, context, request)
                # Registered with no await after the check: a reload sees every stream
                # judged by the trust it replaces.
                stream = _OpenStream(method, caller, asyncio.current_task())
                self._streams.add(stream)
                try:
                    async for response in self._watched(stream, behaviour(request, context)):
                        yield response
                    if stream.ended:
                        await context.abort(stream.code, stream.ended)
                finally:
                    self._streams.discard(stream)
                    stream.close()

            return guarded_stream

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, context, request)
            return await as_awaited(behaviour(request, context))

        return guarded_unary

    async def _watched(self, stream: _OpenStream, responses: Any) -> AsyncIterator[Any]:
        """The responses, until there are no more or the stream must end (then it stops
        early and the caller aborts)."""
        messages = cast(AsyncGenerator[Any, None], as_async_iter(responses))
        try:
            while not stream.ended:
                stream.waiting = True
                try:
                    response = await anext(messages)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not stream.ended or stream.task is None:
                        raise
                    stream.task.uncancel()  # our cancel, turned into the stream's end status
                    return
                finally:
                    stream.waiting = False
                yield response
        finally:
            await messages.aclose()

    async def _check(self, method: str, context: grpc.aio.ServicerContext, request: Any) -> Caller:
        auth_context = context.auth_context()
        if not negotiated_tls13(auth_context):
            version = negotiated_version(auth_context)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this server accepts TLS 1.3 only; the session is {version}",
            )
        try:
            caller = identify(auth_context)
            refusal = self._trust.refusal(caller) if self._trust is not None else None
            if refusal is not None:
                raise NotAuthenticated(refusal)
            authorize(caller, method, self._policy)
        except NotAuthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except AccessDenied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        # Only now, so that a caller without access learns nothing about its request.
        if isinstance(request, UndecodableRequest):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {request.message_type}: {request.error}",
            )
        return caller
