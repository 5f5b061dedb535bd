"""Between the wire and the worker: proto messages <-> worker types, and errors -> status codes.

Every translation lives here, once; the servicer only strings them together.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import fields
from typing import Literal, get_args

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from jobmgr.worker import (
    DEFAULT_ENV,
    CapacityError,
    CommandNotFound,
    DeadlineExceeded,
    InvalidSpec,
    JobNotFound,
    JobSpec,
    JobState,
    JobStatus,
    LaunchError,
    Limits,
    Mount,
    NotExecutable,
    OffsetPastEnd,
    OutputChunk,
    OutputIncomplete,
    Stream,
    WorkerError,
    WorkerUnavailable,
)

from ._proto import job_pb2 as pb

# One output message carries at most this much: large enough for throughput (grpcio moves
# about twice as many bytes per second in 1 MiB messages as in 64 KiB ones).
OUTPUT_MESSAGE_BYTES = 1024 * 1024
# A command in a List reply is cut to this many bytes: 4 MiB then holds thousands of jobs.
LIST_ARGV_BYTES = 1024

# Worker error -> gRPC status code. Subclasses take their closest listed ancestor's code.
STATUS_CODES: dict[type[WorkerError], grpc.StatusCode] = {
    InvalidSpec: grpc.StatusCode.INVALID_ARGUMENT,
    OffsetPastEnd: grpc.StatusCode.OUT_OF_RANGE,
    JobNotFound: grpc.StatusCode.NOT_FOUND,
    LaunchError: grpc.StatusCode.FAILED_PRECONDITION,
    CapacityError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    WorkerUnavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    OutputIncomplete: grpc.StatusCode.DATA_LOSS,
    WorkerError: grpc.StatusCode.INTERNAL,
}

# What a status code alone does not say and a client acts on, in the trailing metadata entry
# REASON_KEY of the failed call: `jobmgr-client run` exits 127 for a command not found and 126
# for one that cannot be executed, as a shell does. Subclasses take their closest ancestor's.
REASON_KEY = "jobmgr-reason"
# WORKER_UNAVAILABLE tells an UNAVAILABLE the server answered (its job launcher is down)
# from a connection that failed.
REASONS: dict[type[WorkerError], str] = {
    CommandNotFound: "COMMAND_NOT_FOUND",
    NotExecutable: "NOT_EXECUTABLE",
    WorkerUnavailable: "WORKER_UNAVAILABLE",
}

STATES: dict[JobState, pb.JobState.ValueType] = {
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.EXITED: pb.JOB_STATE_EXITED,
    JobState.STOPPED: pb.JOB_STATE_STOPPED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.LOST: pb.JOB_STATE_LOST,
}
_STATES_FROM_PROTO = {wire: state for state, wire in STATES.items()}

# StatusResponse fields 1 and 2 as the reference's clients read them: its status knew a job
# as RUNNING or, once ended in any way, EXITED (its STOPPED is a paused process, which a job
# here never is), and terminated said whether a Stop ended it. STOPPED covers each stop
# someone asked for: a Stop call, the job's own timeout (asked for when it was started) and
# the server's shutdown; FAILED and LOST jobs were ended by no one's request.
REFERENCE_VIEW: dict[JobState, tuple[str, bool]] = {
    JobState.RUNNING: ("RUNNING", False),
    JobState.EXITED: ("EXITED", False),
    JobState.STOPPED: ("EXITED", True),
    JobState.FAILED: ("EXITED", False),
    JobState.LOST: ("EXITED", False),
}
assert set(REFERENCE_VIEW) == set(JobState), "a job state has no reference status"

LimitField = Literal["cpu", "memory_bytes", "io_read_bps", "io_write_bps", "pids", "disk_bytes"]
_LIMIT_FIELDS: tuple[LimitField, ...] = get_args(LimitField)
assert set(_LIMIT_FIELDS) == {f.name for f in fields(Limits)}, "Limits and its proto differ"


def status_code(error: WorkerError) -> grpc.StatusCode:
    """The gRPC status code for a worker error."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def reason(error: WorkerError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata saying a worker error's reason, if it has one (see REASONS)."""
    for cls in type(error).__mro__:
        if cls in REASONS:
            return ((REASON_KEY, REASONS[cls]),)
    return ()


def job_id(text: str) -> str:
    """A job id from a request, in the worker's canonical form; InvalidSpec if malformed."""
    if not text:
        raise InvalidSpec("the job id is empty; give the UUID that Start returned")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidSpec(
            f"{shown(text)} is not a job id; job ids are UUIDs such as "
            "'3f2b8c9e-6d1a-4f4e-9a57-0c1d2e3f4a5b'"
        ) from None


def job_spec(request: pb.StartRequest, owner: str) -> JobSpec:
    """The job a StartRequest asks for, owned by ``owner``; InvalidSpec if malformed."""
    if request.argv:
        # Raw bytes; surrogateescape carries the ones that are not UTF-8 through to the job.
        argv = [os.fsdecode(arg) for arg in request.argv]
    elif request.cmd:
        argv = [request.cmd, *request.args]
    else:
        raise InvalidSpec("the command is empty: set cmd (or argv) to the program to run")
    timeout = None
    if request.HasField("timeout"):
        timeout = _seconds(request.timeout, "timeout")
        if timeout <= 0:
            raise InvalidSpec(f"the timeout must be > 0 seconds, got {timeout:g}")
    return JobSpec(
        argv=argv,
        limits=limits_from_proto(request.limits),
        owner=owner,
        # The proto's env adds to the clean default, so `--env K=V` keeps a usable PATH.
        env={**DEFAULT_ENV, **request.env} if request.env else None,
        cwd=request.cwd or None,
        timeout=timeout,
        run_as=request.run_as or None,
        mounts=[Mount(m.source, m.target, m.writable) for m in request.mounts],
        rootfs=request.rootfs or None,
        request_id=request.request_id,
    )


_ID_CHARACTERS = frozenset("0123456789abcdef-")


def id_prefix(request: pb.ListRequest) -> str:
    """The start of a job id a ListRequest narrows to; InvalidSpec unless it can be one."""
    prefix = request.id_prefix
    if len(prefix) > 36 or not _ID_CHARACTERS.issuperset(prefix):
        raise InvalidSpec(
            f"id_prefix {shown(prefix)} cannot start a job id: job ids are lower-case UUIDs "
            "such as '3f2b8c9e-6d1a-4f4e-9a57-0c1d2e3f4a5b'"
        )
    return prefix


def output_tail(request: pb.OutputRequest) -> int | None:
    """How many last lines an OutputRequest asks for; None for all of the output."""
    if not request.HasField("tail"):
        return None
    if request.tail < 0:
        raise InvalidSpec(f"tail must be >= 0 lines, got {request.tail}")
    return request.tail


def output_since(request: pb.OutputRequest) -> int | None:
    """The capture time (ns since the epoch) an OutputRequest starts at; None for none."""
    if not request.HasField("since"):
        return None
    if not 0 <= request.since.nanos < 1_000_000_000:
        raise InvalidSpec(f"since.nanos must be 0-999999999, got {request.since.nanos}")
    return int(request.since.ToNanoseconds())


def limits_from_proto(message: pb.Limits) -> Limits:
    """Limits with the unset fields left to the server's defaults."""
    given = {name: getattr(message, name) for name in _LIMIT_FIELDS if message.HasField(name)}
    return Limits(**given)  # which checks the ranges, NaN and infinities included


def limits_to_proto(limits: Limits) -> pb.Limits:
    """Limits on the wire; unset (None) fields stay unset."""
    given = {name: getattr(limits, name) for name in _LIMIT_FIELDS}
    return pb.Limits(**{name: value for name, value in given.items() if value is not None})


def grace(request: pb.StopRequest) -> float | None:
    """The stop grace period in seconds, or None for the server's default."""
    if not request.HasField("grace"):
        return None
    seconds = _seconds(request.grace, "grace")
    if seconds < 0:
        raise InvalidSpec(f"the grace period must be >= 0 seconds, got {seconds:g}")
    return seconds


def _seconds(duration: Duration, name: str) -> float:
    """A Duration in seconds; one too long for any clock is refused by name."""
    if abs(duration.seconds) > 100 * 365 * 86400:
        raise InvalidSpec(f"the {name} of {duration.seconds} s is beyond any sensible length")
    return float(duration.seconds) + duration.nanos / 1e9


def grace_to_proto(seconds: float) -> Duration:
    """A grace period in seconds, as a Duration."""
    message = Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def state_from_proto(state: pb.JobState.ValueType) -> JobState | None:
    """A wire state as a worker state; None for unspecified; InvalidSpec for a number that
    names no state (proto3 lets any number through)."""
    if state == pb.JOB_STATE_UNSPECIFIED:
        return None
    if state not in _STATES_FROM_PROTO:
        known = ", ".join(s.name for s in JobState)
        raise InvalidSpec(f"state {state} is not a job state (known: {known})")
    return _STATES_FROM_PROTO[state]


def status_to_proto(status: JobStatus, *, argv_limit: int | None = None) -> pb.StatusResponse:
    """A job's status on the wire: fields 1-3 as the reference meant them (REFERENCE_VIEW;
    exit_code is -1 unless the job exited by itself, as Go's ProcessState.ExitCode() says),
    jobmgr's own view in the rest. With ``argv_limit``, a command longer than that many bytes
    is cut short and marked abbreviated (List replies carry many jobs in one message of at
    most MAX_MESSAGE_BYTES)."""
    argv = [arg_bytes(arg) for arg in status.argv]
    abbreviated = argv_limit is not None and sum(len(arg) for arg in argv) > argv_limit
    if abbreviated:
        argv = _cut(argv, argv_limit or 0)
    texts = [arg.decode(errors="replace") for arg in argv]
    reference_status, terminated = REFERENCE_VIEW[status.state]
    message = pb.StatusResponse(
        status=reference_status,
        terminated=terminated,
        exit_code=status.exit_code if status.exit_code is not None else -1,
        uuid=status.id,
        state=STATES[status.state],
        argv=texts,
        # Only when they differ: a command of 2 MiB would otherwise travel twice.
        argv_bytes=argv if any("\ufffd" in text for text in texts) else [],
        argv_abbreviated=abbreviated,
        owner=status.owner,
        limits=limits_to_proto(status.limits),
        started_at=_timestamp(status.started_at),
        signal=status.signal or 0,
        oom_killed=status.oom_killed,
        cpu_seconds=status.cpu_seconds,
        peak_memory_bytes=status.peak_memory_bytes,
        reason=status.reason,
        output_truncated=status.output_truncated,
    )
    if status.ended_at is not None:
        message.ended_at.CopyFrom(_timestamp(status.ended_at))
    return message


def output_to_wire(chunk: OutputChunk) -> Iterator[bytes]:
    """A chunk of output as encoded OutputResponse messages of at most OUTPUT_MESSAGE_BYTES of
    output each, byte for byte what ``SerializeToString`` makes.

    Output is the one RPC whose messages are big: encoding them here takes one copy of the
    bytes, where building a message and serialising it took two (about 0.3 CPU-s per
    streamed GiB of the server's, measured).
    """
    data = chunk.data
    if not data:  # where a tail starts: offset alone (an empty message for offset 0)
        yield _OFFSET_TAG + _varint(chunk.offset) if chunk.offset else b""
        return
    stream = _STREAM_FIELD[chunk.stream]
    when = _captured_at(chunk.captured_at)
    for start in range(0, len(data), OUTPUT_MESSAGE_BYTES):
        piece = data[start : start + OUTPUT_MESSAGE_BYTES]
        offset = chunk.offset + start
        where = _OFFSET_TAG + _varint(offset) if offset else b""
        yield b"".join((_OUTPUT_TAG, _varint(len(piece)), piece, stream, where, when))


def _captured_at(nanoseconds: int | None) -> bytes:
    """Field 5, a Timestamp, encoded; nothing for no time (or one before 1970)."""
    if nanoseconds is None or nanoseconds < 0:
        return b""
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    body = (b"\x08" + _varint(seconds) if seconds else b"") + (
        b"\x10" + _varint(nanos) if nanos else b""
    )
    return _CAPTURED_AT_TAG + _varint(len(body)) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_OUTPUT_TAG = b"\x0a"  # field 1 (output), length-delimited
_OFFSET_TAG = b"\x20"  # field 4 (offset), a varint
_CAPTURED_AT_TAG = b"\x2a"  # field 5 (captured_at), a Timestamp: length-delimited
# Field 2 (stream), a varint; Stream's values are the wire's.
_STREAM_FIELD = {stream: bytes((0x10, int(stream))) for stream in Stream}
TRUNCATION_NOTICE = pb.OutputResponse(truncated=True).SerializeToString()


def encoded(message: bytes) -> bytes:
    """The response serializer of an RPC whose handler yields messages already encoded."""
    return message


MAX_DETAILS_BYTES = 1000  # of an error message (UTF-8): under 1 KiB


def bounded(message: str) -> str:
    """An error message cut to MAX_DETAILS_BYTES: input echoed in it may be huge, and gRPC's
    metadata limits (8 KiB by default) would turn a long one into another error."""
    data = message.encode(errors="replace")
    if len(data) <= MAX_DETAILS_BYTES:
        return message
    kept = data[: MAX_DETAILS_BYTES - 40].decode(errors="ignore")
    return f"{kept}... ({len(message)} characters in all)"


def shown(text: str, limit: int = 80) -> str:
    """A piece of a request, quoted for an error message, cut to ``limit`` characters."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def arg_bytes(arg: str) -> bytes:
    """An argv item as the bytes the job received (see job_spec's os.fsdecode)."""
    try:
        return os.fsencode(arg)
    except UnicodeEncodeError:  # a lone surrogate not made by surrogateescape
        return arg.encode(errors="replace")


def _cut(argv: list[bytes], limit: int) -> list[bytes]:
    """The first ``limit`` bytes of argv, in whole arguments but the last one."""
    kept: list[bytes] = []
    for arg in argv:
        if limit <= 0:
            break
        kept.append(arg[:limit])
        limit -= len(arg)
    return kept


def _timestamp(epoch_seconds: float) -> Timestamp:
    message = Timestamp()
    message.FromNanoseconds(round(epoch_seconds * 1e9))
    return message
