"""How one RPC went, caught instead of raised, so that a step can judge its status code."""

from __future__ import annotations

# Before grpc: importing jobmgr.api makes gRPC refuse TLS 1.2 in this process.
import jobmgr.api  # noqa: F401  # isort: skip

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from jobmgr.api import job_pb2

from .speed import scaled

CALL_TIMEOUT = 30.0


@dataclass
class CallResult:
    """How one RPC went: its status code, details, (on success) its value, and how long it
    took."""

    code: grpc.StatusCode
    details: str = ""
    value: Any = None
    seconds: float = 0.0


def call(method: Callable[..., Any], request: Any, *, timeout: float = CALL_TIMEOUT) -> CallResult:
    """Make a unary call, or drain a streaming one into a list, catching its status. A raw
    method (see ``Client.raw_method``) gives its reply as bytes. ``timeout`` is scaled."""
    began = time.monotonic()
    try:
        value = method(request, timeout=scaled(timeout))
        if not hasattr(value, "SerializeToString") and not isinstance(value, bytes):
            value = list(value)  # a response stream
    except grpc.RpcError as exc:
        return CallResult(exc.code(), exc.details() or "", None, time.monotonic() - began)
    return CallResult(grpc.StatusCode.OK, "", value, time.monotonic() - began)


def collect(messages: Iterable[job_pb2.OutputResponse]) -> dict[str, bytes]:
    """Output messages joined per stream."""
    out = {"stdout": b"", "stderr": b""}
    for message in messages:
        out["stderr" if message.stream == job_pb2.STREAM_STDERR else "stdout"] += message.output
    return out
