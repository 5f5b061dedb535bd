"""Between jobmgr.client's types and the wire's messages, each translation once."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Literal

from jobmgr.api import job_pb2 as pb

from ._types import JobSpec, JobState, JobStatus, Limits, OutputChunk, Stream

LimitField = Literal["cpu", "memory_bytes", "io_read_bps", "io_write_bps", "pids", "disk_bytes"]
_LIMIT_FIELDS: tuple[LimitField, ...] = (
    "cpu",
    "memory_bytes",
    "io_read_bps",
    "io_write_bps",
    "pids",
    "disk_bytes",
)
_STATES = {
    pb.JOB_STATE_RUNNING: JobState.RUNNING,
    pb.JOB_STATE_EXITED: JobState.EXITED,
    pb.JOB_STATE_STOPPED: JobState.STOPPED,
    pb.JOB_STATE_FAILED: JobState.FAILED,
    pb.JOB_STATE_LOST: JobState.LOST,
}
STATE_VALUES = {state: value for value, state in _STATES.items()}


def start_request(spec: JobSpec) -> pb.StartRequest:
    """The StartRequest for a job: argv as exact bytes, and as text too when it is text, for
    servers that know only the reference's cmd and args.

    Client.start and AsyncClient.start build every Start here and send it once: a Start whose
    connection drops may have started the job, so it is never sent again blindly. Each
    carries a request id of its own (128 random bits): a server that got it before answers
    the same request sent again with the job the first one started, never a second."""
    argv = spec.argv_bytes()
    request = pb.StartRequest(
        argv=argv,
        limits=pb.Limits(
            **{
                name: getattr(spec.limits, name)
                for name in _LIMIT_FIELDS
                if getattr(spec.limits, name) is not None
            }
        ),
        env=dict(spec.env),
        cwd=spec.cwd or "",
        run_as=spec.run_as or "",
        mounts=[
            pb.Mount(source=m.source, target=m.target, writable=m.writable) for m in spec.mounts
        ],
        rootfs=spec.rootfs or "",
        request_id=os.urandom(16).hex(),
    )
    try:
        texts = [arg.decode() for arg in argv]
        request.cmd, request.args[:] = texts[0], texts[1:]
    except UnicodeDecodeError:
        pass
    if spec.timeout is not None:
        request.timeout.FromNanoseconds(round(spec.timeout * 1e9))
    return request


def status(message: pb.StatusResponse) -> JobStatus:
    """A job's status from the wire. Its state comes from ``state``, never from the
    reference's ``status`` (field 1), which says only RUNNING or EXITED."""
    state = _STATES.get(message.state)
    if state is None:
        raise ValueError(f"the server sent a job state this client does not know ({message.state})")
    ended = state is not JobState.RUNNING
    if message.argv_bytes:
        argv = tuple(os.fsdecode(arg) for arg in message.argv_bytes)
    else:
        argv = tuple(message.argv)
    return JobStatus(
        id=message.uuid,
        state=state,
        argv=argv,
        owner=message.owner,
        limits=Limits(
            **{
                name: getattr(message.limits, name) if message.limits.HasField(name) else None
                for name in _LIMIT_FIELDS
            }
        ),
        started_at=_time(message.started_at) if message.HasField("started_at") else None,
        ended_at=_time(message.ended_at) if message.HasField("ended_at") else None,
        # -1 (and any code while it runs) means it did not exit by itself.
        exit_code=message.exit_code if ended and message.exit_code >= 0 else None,
        signal=message.signal or None,
        oom_killed=message.oom_killed,
        cpu_seconds=message.cpu_seconds,
        peak_memory_bytes=message.peak_memory_bytes,
        reason=message.reason,
        output_truncated=message.output_truncated,
        argv_abbreviated=message.argv_abbreviated,
    )


def stop_request(job_id: str, grace: float | None) -> pb.StopRequest:
    request = pb.StopRequest(uuid=job_id)
    if grace is not None:
        request.grace.FromNanoseconds(round(grace * 1e9))
    return request


def list_request(state: JobState | None, owner: str, page_size: int, prefix: str) -> pb.ListRequest:
    return pb.ListRequest(
        state=STATE_VALUES[state] if state else pb.JOB_STATE_UNSPECIFIED,
        owner=owner,
        page_size=page_size,
        id_prefix=prefix,
    )


def output_request(
    job_id: str, follow: bool, tail: int | None, since: datetime | None, offset: int
) -> pb.OutputRequest:
    """The request for a job's output from ``tail`` or ``since`` until a message has said
    at which offset that starts (then None), else from ``offset``."""
    request = pb.OutputRequest(uuid=job_id, no_follow=not follow)
    if tail is not None:
        request.tail = tail
    elif since is not None:
        request.since.FromNanoseconds(round(since.timestamp() * 1e6) * 1000)
    else:
        request.offset = offset
    return request


def chunk(message: pb.OutputResponse, expected: int) -> OutputChunk:
    """An output message as a chunk; ``expected`` is the offset its bytes start at unless
    the message says otherwise (0 is not sent)."""
    stream = Stream.STDERR if message.stream == pb.STREAM_STDERR else Stream.STDOUT
    when = _floor_time(message.captured_at) if message.HasField("captured_at") else None
    return OutputChunk(stream, message.output, message.offset or expected, when)


def _time(stamp: object) -> datetime:
    seconds = stamp.seconds + stamp.nanos / 1e9  # type: ignore[attr-defined]
    return datetime.fromtimestamp(seconds, UTC)


def _floor_time(stamp: object) -> datetime:
    """A Timestamp to the microsecond at or before it: given back as ``since``, it selects
    the output it came with."""
    seconds, nanos = stamp.seconds, stamp.nanos  # type: ignore[attr-defined]
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000)
