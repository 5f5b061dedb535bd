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
from collections.abc import Callable, Mapping
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
#
# Each class and annotation is turned once into a reader (a function of the JSON value alone),
# so a message is checked by plain calls, without looking at its annotations again; a reader
# says where a value misfits only when one does, by the path its callers add on the way out.
# A Start costs the worker and the launcher a handful of messages each, all on its path.

_SCALARS = frozenset({str, int, float, bool, type(None)})


def to_wire(value: Any) -> Any:
    """A message (or any of its fields) as JSON values."""
    if type(value) in _SCALARS:
        return value
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
    try:
        return _read_dataclass(cls, fields)  # type: ignore[no-any-return]
    except _Misfit as misfit:
        raise ProtocolError(f"{where or cls.__name__}{misfit.where}: {misfit}") from None


class _Misfit(Exception):
    """A value that does not fit its annotation; ``where`` is its path below the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.where = ""

    def inside(self, step: str) -> _Misfit:
        self.where = step + self.where
        return self


Reader = Callable[[object], Any]


def _read_dataclass(cls: type, fields: object) -> Any:
    if not isinstance(fields, dict):
        raise _Misfit(f"expected an object, got {type(fields).__name__}")
    values = {}
    for name, read, optional in _plan(cls):
        if name in fields:
            try:
                values[name] = read(fields[name])
            except _Misfit as misfit:
                raise misfit.inside(f".{name}") from None
        elif not optional:
            raise _Misfit(f"{name} is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # InvalidSpec is a ValueError: limits out of range
        raise _Misfit(str(exc)) from None


_PLANS: dict[type, tuple[tuple[str, Reader, bool], ...]] = {}


def _plan(cls: type) -> tuple[tuple[str, Reader, bool], ...]:
    """Each field of ``cls``: its name, its reader, and whether a frame may leave it out."""
    plan = _PLANS.get(cls)
    if plan is None:
        schema = _schema(cls)
        where = cls.__name__
        plan = _PLANS[cls] = tuple(
            (name, _reader(hint, f"{where}.{name}"), name in schema.optional)
            for name, hint in schema.hints.items()
        )
    return plan


def _reader(hint: Any, where: str) -> Reader:
    """The reader of values annotated ``hint``; TypeError if no such value can travel."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = (arg for arg in args if arg is not type(None))
        return _optional(_reader(inner, where)) if type(None) in args else _reader(inner, where)
    if origin is tuple:
        return _tuple_of(_reader(args[0], f"{where}[]"))
    if origin in (Mapping, dict):
        return _mapping_of(_reader(args[1], f"{where}[]"))
    if hint is float:
        return _read_float
    if hint in (str, int, bool):
        return _scalar(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return lambda value: _read_dataclass(hint, value)
    raise TypeError(f"{where}: a {hint} cannot travel in a message")


def _optional(read: Reader) -> Reader:
    return lambda value: None if value is None else read(value)


def _tuple_of(read: Reader) -> Reader:
    def read_tuple(value: object) -> tuple[Any, ...]:
        items = _of_type(value, list)
        out = []
        for i, item in enumerate(items):
            try:
                out.append(read(item))
            except _Misfit as misfit:
                raise misfit.inside(f"[{i}]") from None
        return tuple(out)

    return read_tuple


def _mapping_of(read: Reader) -> Reader:
    def read_mapping(value: object) -> dict[Any, Any]:
        pairs = _of_type(value, dict)
        out = {}
        for key, item in pairs.items():
            try:
                out[key] = read(item)
            except _Misfit as misfit:
                raise misfit.inside(f"[{key!r}]") from None
        return out

    return read_mapping


def _read_float(value: object) -> float:
    if type(value) is float:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return _scalar(float)(value)  # type: ignore[no-any-return]


def _scalar(kind: type) -> Reader:
    def read_scalar(value: object) -> Any:
        if type(value) is kind:
            return value
        if isinstance(value, bool) is not (kind is bool):
            raise _Misfit(f"expected {kind.__name__}, got {value!r}")
        return _of_type(value, kind)

    return read_scalar


def _enum(kind: type[enum.Enum]) -> Reader:
    def read_enum(value: object) -> enum.Enum:
        try:
            return kind(value)
        except ValueError:
            raise _Misfit(f"{value!r} is not a {kind.__name__}") from None

    return read_enum


def _of_type(value: object, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise _Misfit(f"expected {kind.__name__}, got {value!r}")
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
