"""Between the wire and the worker: proto messages <-> worker types, and errors -> status codes.

Every translation lives here, once; the servicer only strings them together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import fields
from typing import Literal, get_args

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from jobmgr.worker import (
    CapacityError,
    InvalidSpec,
    JobNotFound,
    JobSpec,
    JobState,
    JobStatus,
    LaunchError,
    Limits,
    OutputChunk,
    WorkerError,
    WorkerUnavailable,
)

from ._proto import job_pb2 as pb

# One output message carries at most this much: large enough for throughput (grpcio moves
# about twice as many bytes per second in 1 MiB messages as in 64 KiB ones).
OUTPUT_MESSAGE_BYTES = 1024 * 1024
# Receive limit for requests (an argv is small) and both limits for clients reading output.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# Worker error -> gRPC status code. Subclasses take their closest listed ancestor's code.
STATUS_CODES: dict[type[WorkerError], grpc.StatusCode] = {
    InvalidSpec: grpc.StatusCode.INVALID_ARGUMENT,
    JobNotFound: grpc.StatusCode.NOT_FOUND,
    LaunchError: grpc.StatusCode.FAILED_PRECONDITION,
    CapacityError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    WorkerUnavailable: grpc.StatusCode.UNAVAILABLE,
    WorkerError: grpc.StatusCode.INTERNAL,
}

STATES: dict[JobState, pb.JobState.ValueType] = {
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.EXITED: pb.JOB_STATE_EXITED,
    JobState.STOPPED: pb.JOB_STATE_STOPPED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.LOST: pb.JOB_STATE_LOST,
}
_STATES_FROM_PROTO = {wire: state for state, wire in STATES.items()}

LimitField = Literal["cpu", "memory_bytes", "io_read_bps", "io_write_bps", "pids"]
_LIMIT_FIELDS: tuple[LimitField, ...] = get_args(LimitField)
assert set(_LIMIT_FIELDS) == {f.name for f in fields(Limits)}, "Limits and its proto differ"


def status_code(error: WorkerError) -> grpc.StatusCode:
    """The gRPC status code for a worker error."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def job_id(text: str) -> str:
    """A job id from a request, in the worker's canonical form; InvalidSpec if malformed."""
    if not text:
        raise InvalidSpec("the job id is empty; give the UUID that Start returned")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidSpec(
            f"{text!r} is not a job id; job ids are UUIDs such as "
            "'3f2b8c9e-6d1a-4f4e-9a57-0c1d2e3f4a5b'"
        ) from None


def job_spec(request: pb.StartRequest, owner: str) -> JobSpec:
    """The job a StartRequest asks for, owned by ``owner``; InvalidSpec if malformed."""
    if not request.cmd:
        raise InvalidSpec("the command is empty: set cmd to the program to run")
    return JobSpec(
        argv=[request.cmd, *request.args],
        limits=limits_from_proto(request.limits),
        owner=owner,
    )


def limits_from_proto(message: pb.Limits) -> Limits:
    """Limits with the unset fields left to the server's defaults."""
    given = {name: getattr(message, name) for name in _LIMIT_FIELDS if message.HasField(name)}
    return Limits(**given)


def limits_to_proto(limits: Limits) -> pb.Limits:
    """Limits on the wire; unset (None) fields stay unset."""
    given = {name: getattr(limits, name) for name in _LIMIT_FIELDS}
    return pb.Limits(**{name: value for name, value in given.items() if value is not None})


def grace(request: pb.StopRequest) -> float | None:
    """The stop grace period in seconds, or None for the server's default."""
    if not request.HasField("grace"):
        return None
    seconds = request.grace.ToTimedelta().total_seconds()
    if seconds < 0:
        raise InvalidSpec(f"the grace period must be >= 0 seconds, got {seconds:g}")
    return seconds


def grace_to_proto(seconds: float) -> Duration:
    """A grace period in seconds, as a Duration."""
    message = Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def state_from_proto(state: pb.JobState.ValueType) -> JobState | None:
    """A wire state as a worker state; None for unspecified."""
    return _STATES_FROM_PROTO.get(state)


def status_to_proto(status: JobStatus) -> pb.StatusResponse:
    """A job's status on the wire, reference fields included."""
    message = pb.StatusResponse(
        status=status.state.value,
        terminated=status.terminated,
        exit_code=status.exit_code if status.exit_code is not None else -1,
        uuid=status.id,
        state=STATES[status.state],
        argv=status.argv,
        owner=status.owner,
        limits=limits_to_proto(status.limits),
        started_at=_timestamp(status.started_at),
        signal=status.signal or 0,
        oom_killed=status.oom_killed,
        cpu_seconds=status.cpu_seconds,
        peak_memory_bytes=status.peak_memory_bytes,
        reason=status.reason,
    )
    if status.ended_at is not None:
        message.ended_at.CopyFrom(_timestamp(status.ended_at))
    return message


def output_to_proto(chunk: OutputChunk) -> Iterator[pb.OutputResponse]:
    """A chunk of output as messages of at most OUTPUT_MESSAGE_BYTES each."""
    data = chunk.data
    stream = int(chunk.stream)
    for start in range(0, len(data), OUTPUT_MESSAGE_BYTES):
        yield pb.OutputResponse(
            output=data[start : start + OUTPUT_MESSAGE_BYTES],
            stream=stream,  # type: ignore[arg-type]  # Stream's values are the wire's
        )


def _timestamp(epoch_seconds: float) -> Timestamp:
    message = Timestamp()
    message.FromNanoseconds(round(epoch_seconds * 1e9))
    return message
