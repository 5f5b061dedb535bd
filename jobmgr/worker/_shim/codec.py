"""How the messages of the contract become bytes and back; nothing else builds or reads them.

On the socket a frame is a 4-byte big-endian length and a JSON object: a request
``{"op": name, "req": n, ...fields}``, a reply ``{"ev": "reply", "req": n, "ok": bool,
...fields}`` (the reply type, or RequestFailed when ``ok`` is false), an event ``{"ev": name,
...fields}``. A frame that carries file descriptors (see _fdpass) says how many in ``"fds"``.
JSON keeps the launcher free of any parser it would have to trust; a string that came from
non-UTF-8 bytes (an argv item, a file name) travels as surrogate escapes, which json writes as
``\\udcXX`` and reads back exactly.

A message's fields are its dataclass fields, read back against their annotations: a frame that
does not fit raises ProtocolError here, never a KeyError in a handler. A field with a default
may be absent (a peer that predates it), and a key nobody knows is ignored.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import struct
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import WorkerError
from .messages import (
    EVENT_NAMES,
    REQUEST_NAMES,
    Event,
    JobRecord,
    JobResult,
    Reply,
    Request,
)
from .stages import RequestFailed

HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024
T = TypeVar("T")

_REQUESTS = {name: cls for cls, name in REQUEST_NAMES.items()}
_EVENTS = {name: cls for cls, name in EVENT_NAMES.items()}


class ProtocolError(WorkerError):
    """A frame that is not a message of this contract; ``req`` is its request id, if known."""

    def __init__(self, message: str, req: int | None = None) -> None:
        super().__init__(message)
        self.req = req


# ---- frames -------------------------------------------------------------------------------


def frame(fields: Mapping[str, object]) -> bytes:
    data = json.dumps(fields, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


class FrameDecoder:
    """Turns a byte stream back into JSON objects, however it was split."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        objects: list[dict[str, Any]] = []
        while len(self._buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buf)
            if length > MAX_MESSAGE:
                raise ProtocolError(f"a frame of {length} bytes exceeds the {MAX_MESSAGE} limit")
            if len(self._buf) < HEADER.size + length:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + length])
            del self._buf[: HEADER.size + length]
            objects.append(_json_object(body))
        return objects


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"a frame is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"a frame holds {type(value).__name__}, not an object")
    return value


# ---- requests, replies, events ------------------------------------------------------------


FDS = "fds"  # how many descriptors came with a frame


def encode_request(req: int, request: Request[Any], fds: int = 0) -> bytes:
    fields = {"op": REQUEST_NAMES[type(request)], "req": req, **to_wire(request)}
    return frame({**fields, FDS: fds} if fds else fields)


def decode_request(fields: dict[str, Any]) -> tuple[int, Request[Any]]:
    """A request and its id; ProtocolError (with the id, if it was readable) otherwise."""
    req = fields.get("req")
    if not isinstance(req, int) or isinstance(req, bool):
        raise ProtocolError(f"a request without a valid id: {req!r}")
    op = fields.get("op")
    request_class = _REQUESTS.get(op) if isinstance(op, str) else None
    if request_class is None:
        raise ProtocolError(f"unknown request {op!r}", req)
    try:
        return req, from_wire(request_class, fields)
    except ProtocolError as exc:
        raise ProtocolError(str(exc), req) from None


def encode_reply(req: int, reply: Reply | RequestFailed) -> bytes:
    ok = not isinstance(reply, RequestFailed)
    return frame({"ev": "reply", "req": req, "ok": ok, **to_wire(reply)})


def encode_event(event: Event, fds: int = 0) -> bytes:
    fields = {"ev": EVENT_NAMES[type(event)], **to_wire(event)}
    return frame({**fields, FDS: fds} if fds else fields)


def fd_count(fields: dict[str, Any]) -> int:
    """How many descriptors came with a frame (0 for most)."""
    count = fields.get(FDS, 0)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 253:
        raise ProtocolError(f"a frame carries a bad descriptor count: {count!r}")
    return count


@dataclass(frozen=True)
class ReplyFrame:
    """A reply as read, before the request it answers says which type it holds."""

    req: int
    ok: bool
    fields: dict[str, Any]

    def open(self, reply_type: type[T]) -> T | RequestFailed:
        if self.ok:
            return from_wire(reply_type, self.fields)
        return from_wire(RequestFailed, self.fields)


def decode_from_launcher(fields: dict[str, Any]) -> Event | ReplyFrame:
    kind = fields.get("ev")
    if kind == "reply":
        req, ok = fields.get("req"), fields.get("ok")
        if not isinstance(req, int) or not isinstance(ok, bool):
            raise ProtocolError(f"a reply without a valid id or outcome: {req!r}, {ok!r}")
        return ReplyFrame(req, ok, fields)
    event_class = _EVENTS.get(kind) if isinstance(kind, str) else None
    if event_class is None:
        raise ProtocolError(f"unknown event {kind!r}")
    return from_wire(event_class, fields)


# ---- the record frame's body (see _records) -----------------------------------------------


def encode_record(job: JobRecord, result: JobResult | None) -> bytes:
    return json.dumps({"job": to_wire(job), "result": to_wire(result)}).encode()


def decode_record(body: bytes) -> tuple[JobRecord, JobResult | None]:
    fields = _json_object(body)
    job = from_wire(JobRecord, _field(fields, "job", "record"))
    result = fields.get("result")
    return job, None if result is None else from_wire(JobResult, result)


# ---- dataclasses to JSON values and back --------------------------------------------------


def to_wire(value: Any) -> Any:
    """A message (or any of its fields) as JSON values."""
    if dataclasses.is_dataclass(value):
        return {name: to_wire(getattr(value, name)) for name in _schema(type(value)).hints}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_wire(item) for item in value]
    if isinstance(value, Mapping):
        return {key: to_wire(item) for key, item in value.items()}
    return value


def from_wire(cls: type[T], fields: object, where: str = "") -> T:
    """An instance of dataclass ``cls`` from JSON values, every field checked."""
    where = where or cls.__name__
    if not isinstance(fields, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(fields).__name__}")
    schema = _schema(cls)
    values = {}
    for name, hint in schema.hints.items():
        if name in fields:
            values[name] = _read(hint, fields[name], f"{where}.{name}")
        elif name not in schema.optional:
            raise ProtocolError(f"{where}: {name} is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # InvalidSpec is a ValueError: limits out of range
        raise ProtocolError(f"{where}: {exc}") from None


def _read(hint: Any, value: object, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = (arg for arg in args if arg is not type(None))
        return _read(inner, value, where)
    if origin is tuple:
        items = _of_type(value, list, where)
        return tuple(_read(args[0], item, f"{where}[{i}]") for i, item in enumerate(items))
    if origin in (Mapping, dict):
        pairs = _of_type(value, dict, where)
        return {key: _read(args[1], item, f"{where}[{key!r}]") for key, item in pairs.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool):
        if isinstance(value, bool) is not (hint is bool):
            raise ProtocolError(f"{where}: expected {hint.__name__}, got {value!r}")
        return _of_type(value, hint, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise ProtocolError(f"{where}: {value!r} is not a {hint.__name__}") from None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_wire(hint, value, where)
    raise TypeError(f"{where}: a {hint} cannot travel in a message")


def _of_type(value: object, kind: type[T], where: str) -> T:
    if not isinstance(value, kind):
        raise ProtocolError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _field(fields: dict[str, Any], name: str, where: str) -> Any:
    if name not in fields:
        raise ProtocolError(f"{where}: {name} is missing")
    return fields[name]


@dataclass(frozen=True)
class _Schema:
    hints: dict[str, Any]  # every field and its resolved annotation, in order
    optional: frozenset[str]  # the fields with a default, which a frame may leave out


_SCHEMAS: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        schema = _SCHEMAS[cls] = _Schema(
            hints={f.name: hints[f.name] for f in fields},
            optional=frozenset(
                f.name
                for f in fields
                if f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING
            ),
        )
    return schema
