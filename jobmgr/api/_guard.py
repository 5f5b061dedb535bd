"""The one place every RPC passes through: TLS 1.3 check, then role check, then the request's
own validity (bytes that decode to no request are INVALID_ARGUMENT), then the handler.

Every method of every service on the server (JobManager, health checking, reflection) is
guarded: the interceptor wraps each handler (see _handlers), whatever its kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from ._auth import ROLE_POLICY, AccessDenied, NotAuthenticated, authorize, identify
from ._handlers import (
    Behaviour,
    UndecodableRequest,
    WrappingInterceptor,
    as_async_iter,
    as_awaited,
)
from ._tls import negotiated_tls13, negotiated_version


class AccessGuard(WrappingInterceptor):
    """Refuses every RPC that is not over TLS 1.3 or whose caller's role may not make it."""

    lenient_requests = True

    def __init__(self, policy: Mapping[str, frozenset[str]] = ROLE_POLICY) -> None:
        self._policy = policy

    def wrap(self, method: str, behaviour: Behaviour, handler: Any) -> Behaviour:
        return self._guarded(method, behaviour, handler)

    def _guarded(self, method: str, behaviour: Behaviour, handler: Any) -> Behaviour:
        if handler.response_streaming:

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._check(method, context, request)
                async for response in as_async_iter(behaviour(request, context)):
                    yield response

            return guarded_stream

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, context, request)
            return await as_awaited(behaviour(request, context))

        return guarded_unary

    async def _check(self, method: str, context: grpc.aio.ServicerContext, request: Any) -> None:
        auth_context = context.auth_context()
        if not negotiated_tls13(auth_context):
            version = negotiated_version(auth_context)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this server accepts TLS 1.3 only; the session is {version}",
            )
        try:
            authorize(identify(auth_context), method, self._policy)
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
