"""Admission: the calls in flight on the whole server, and the streams each caller holds.

The outermost interceptor. A call past ``rpcs_in_flight``, or a streaming call (Output, health
Watch, reflection) past its caller's ``streams_per_caller``, ends at once with
RESOURCE_EXHAUSTED and a message naming the limit, before the handler opens anything. An
Output stream holds its job's log open as long as it lasts, so this is what keeps one
read-only certificate from taking every file descriptor the server has.

A caller is counted by its ``Caller.identity`` (the verified certificate's whole Subject, as
the access guard reads it): the same identity, on any number of connections and with any
number of certificates, shares one count.
Refusals are logged to ``jobmgr.limits``, a few per limit and window (see ``_ratelog``); they
do not reach the call log, which records the calls admitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Hashable
from typing import Any

import grpc

from ._auth import Caller, NotAuthenticated, identify
from ._calllog import peer_of
from ._handlers import Behaviour, WrappingInterceptor, as_async_iter, as_awaited
from ._limits import ConnectionLimits
from ._ratelog import LogThrottle

log = logging.getLogger("jobmgr.limits")


class Admission(WrappingInterceptor):
    """Counts calls in flight and each caller's open streams; refuses those past a limit.

    Runs on the server's event loop only, so its counters need no lock.
    """

    def __init__(self, limits: ConnectionLimits, throttle: LogThrottle | None = None) -> None:
        super().__init__()
        self._limits = limits
        self._in_flight = 0
        self._streams: Counter[str] = Counter()  # Caller.identity -> streams open
        self._throttle = throttle or LogThrottle()
        self._summary: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def wrap(self, method: str, behaviour: Behaviour, handler: Any) -> Behaviour:
        streaming = bool(handler.response_streaming or handler.request_streaming)
        if handler.response_streaming:

            async def admitted_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                admitted, caller = self._enter(method, context, streaming)
                if not admitted:
                    return
                try:
                    async for response in as_async_iter(behaviour(request, context)):
                        yield response
                finally:
                    self._leave(caller)

            return admitted_stream

        async def admitted_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            admitted, caller = self._enter(method, context, streaming)
            if not admitted:
                return None
            try:
                return await as_awaited(behaviour(request, context))
            finally:
                self._leave(caller)

        return admitted_unary

    def _enter(
        self, method: str, context: grpc.aio.ServicerContext, streaming: bool
    ) -> tuple[bool, Caller | None]:
        """Count the call in (True), or set RESOURCE_EXHAUSTED on it (False).

        A refusal sets the status rather than aborting: an abort raises, and the exception's
        traceback ties the call's objects (and the native memory behind them) into a cycle
        that only the cyclic collector frees, long after a flood of refusals.
        """
        caller = _caller(context) if streaming else None
        if self._in_flight >= self._limits.rpcs_in_flight:
            self._refuse(
                context,
                method,
                "rpcs_in_flight",
                f"the server has {self._in_flight} calls in progress, its limit "
                f"(rpcs_in_flight = {self._limits.rpcs_in_flight}); try again shortly",
            )
            return False, None
        held = self._streams[caller.identity] if caller is not None else 0
        if caller is not None and held >= self._limits.streams_per_caller:
            self._refuse(
                context,
                method,
                "streams_per_caller",
                f"client {caller.name!r} (role {caller.role or '-'}) already has "
                f"{held} streams open, the most one caller may hold "
                f"(streams_per_caller = {self._limits.streams_per_caller}); "
                "end one before opening another",
                caller,
            )
            return False, None
        self._in_flight += 1
        if caller is not None:
            self._streams[caller.identity] += 1
        return True, caller

    def _leave(self, caller: Caller | None) -> None:
        self._in_flight -= 1
        if caller is not None:
            self._streams[caller.identity] -= 1
            if not self._streams[caller.identity]:
                del self._streams[caller.identity]

    def _refuse(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        limit: str,
        message: str,
        caller: Caller | None = None,
    ) -> None:
        held_back = self._throttle.admit(limit)
        if held_back is None:
            self._summarize_later()
        else:
            if caller is None:
                caller = _caller(context)
            fields: dict[str, Any] = {
                "limit": limit,
                "max": getattr(self._limits, limit),
                "method": method,
                "peer": peer_of(context),
                "caller": caller.name if caller else "",
                "role": (caller.role or ",".join(caller.roles)) if caller else "",
                "code": grpc.StatusCode.RESOURCE_EXHAUSTED.name,
            }
            if held_back:
                fields["not_logged"] = held_back
            log.warning("refused", extra={"fields": fields})
        context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        context.set_details(message)

    def _summarize_later(self) -> None:
        """Say, once the window has passed, how many refusals were not logged."""
        if self._summary is None:
            loop = asyncio.get_running_loop()
            self._summary = loop.call_later(self._throttle.window, self._summarize)

    def _summarize(self) -> None:
        self._summary = None
        for limit, count in self._throttle.overdue():
            _log_summary(limit, count, getattr(self._limits, str(limit)))
        if self._throttle.holding():
            self._summarize_later()


def _log_summary(limit: Hashable, count: int, cap: int) -> None:
    fields = {"limit": limit, "max": cap, "not_logged": count}
    log.warning("refused", extra={"fields": fields})


def _caller(context: grpc.aio.ServicerContext) -> Caller | None:
    try:
        return identify(context.auth_context())
    except NotAuthenticated:
        return None  # the access guard refuses it
