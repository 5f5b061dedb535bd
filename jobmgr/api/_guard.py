"""The one place every RPC passes through: TLS 1.3 check, then role check, then the handler.

Python server interceptors are not given the call's context, so they cannot see the peer
certificate. This interceptor instead returns a copy of the method handler whose behaviour
first checks the context, then runs the original. All four handler kinds are wrapped, so a
streaming RPC is guarded exactly like a unary one.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from ._auth import ROLE_POLICY, AccessDenied, NotAuthenticated, authorize, identify
from ._tls import negotiated_tls13, negotiated_version

Behaviour = Callable[[Any, grpc.aio.ServicerContext], Any]


class AccessGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every RPC that is not over TLS 1.3 or whose caller's role may not make it."""

    def __init__(self, policy: Mapping[str, frozenset[str]] = ROLE_POLICY) -> None:
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        method: str = handler_call_details.method
        return _rewrap(handler, lambda behaviour: self._guarded(method, behaviour, handler))

    def _guarded(self, method: str, behaviour: Behaviour, handler: Any) -> Behaviour:
        if handler.response_streaming:

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._check(method, context)
                async for response in _as_async_iter(behaviour(request, context)):
                    yield response

            return guarded_stream

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, context)
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

        return guarded_unary

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
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


async def _as_async_iter(responses: Any) -> AsyncIterator[Any]:
    """A streaming behaviour's responses, whether it returns an async or a plain iterator."""
    if inspect.isawaitable(responses):
        responses = await responses
    if hasattr(responses, "__aiter__"):
        async for response in responses:
            yield response
    elif responses is not None:
        for response in responses:
            yield response


def _rewrap(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behaviour], Behaviour]
) -> grpc.RpcMethodHandler:
    """A handler like ``handler`` whose behaviour (whichever of the four kinds) is wrapped."""
    de, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), de, ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), de, ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), de, ser)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), de, ser)
