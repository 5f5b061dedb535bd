"""What the launcher leaves on disk for a server that is not connected: the job's record, as
the first frame of its output log, ``jobs/<id>.log``.

The record frame (stream 0, which readers skip) holds ``{"job": ..., "result": ...}`` as JSON,
padded with spaces. It is written when the job starts, with ``result`` null, and overwritten
in place when the job ends: the space is the file's already, so a job that ends on a full disk
is still recorded. A job costs one file and no directory: on ext4 each new inode costs the
launcher about a millisecond in bursts. The worker folds these records into its database when
it (re)connects.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from ._frames import FRAME, OVERHEAD, RECORD_STREAM, TRAILER
from ._shim import JobRecord, JobResult, ProtocolError, decode_record, encode_record
from ._status import JobState
from .cgroups import CgroupStats

LOG_SUFFIX = ".log"
OOM_REASON = "the memory limit was exceeded and the OOM killer fired"
RESULT_ROOM = 2048  # a result is a few hundred bytes of JSON
MAX_RECORD = 16 * 1024 * 1024  # far above any record: argv and env fit in a 4 MiB request


def log_path(jobs_dir: Path, job_id: str) -> Path:
    """Where job ``job_id``'s output log is kept."""
    return jobs_dir / (job_id + LOG_SUFFIX)


def logged_jobs(jobs_dir: Path) -> list[str]:
    """The ids of the jobs with a log in ``jobs_dir``."""
    return [p.name.removesuffix(LOG_SUFFIX) for p in jobs_dir.glob("*" + LOG_SUFFIX)]


def record_frame(job: JobRecord) -> bytes:
    """The first frame of a job's log: its record, with room for its result."""
    body = encode_record(job, None) + b" " * RESULT_ROOM
    return FRAME.pack(RECORD_STREAM, len(body)) + body + TRAILER.pack(len(body))


@dataclass(frozen=True)
class DamagedRecord:
    """A log whose record frame cannot be read; ``reason`` says what is wrong with it."""

    reason: str


Record = tuple[JobRecord, JobResult | None]


def load_record(log: Path) -> Record | DamagedRecord:
    """The job record and result (None while it runs) from the head of a log, or what is
    wrong with it. Every log in jobs/ had its record written before it was moved there, so
    one that cannot be read was damaged (or cut) since."""
    try:
        with open(log, "rb") as f:
            head = f.read(FRAME.size)
            if len(head) < FRAME.size:
                return DamagedRecord(f"the log is only {len(head)} bytes long")
            stream, length = FRAME.unpack(head)
            if stream != RECORD_STREAM or length > MAX_RECORD:
                return DamagedRecord(f"its first frame header is not a record's ({head.hex()})")
            return decode_record(f.read(length))
    except ProtocolError as exc:
        return DamagedRecord(f"its record does not parse: {exc}")
    except OSError as exc:
        return DamagedRecord(f"it cannot be read: {exc.strerror}")


def read_record(log: Path) -> Record | None:
    """The job record and result from a log; None if it has none that can be read."""
    record = load_record(log)
    return None if isinstance(record, DamagedRecord) else record


def write_result(log: Path, job: JobRecord, result: JobResult, frame_size: int) -> bool:
    """Put ``result`` into the record frame of ``frame_size`` bytes at the head of ``log``,
    rewriting the whole frame (header and trailer too), so a head damaged while the job ran
    is mended from the record the caller holds. True if the head on disk was damaged."""
    body_size = frame_size - OVERHEAD
    body = encode_record(job, result)
    if len(body) > body_size:
        raise OSError(f"the result of {log.stem} does not fit its record frame")
    frame = FRAME.pack(RECORD_STREAM, body_size) + body.ljust(body_size) + TRAILER.pack(body_size)
    fd = os.open(log, os.O_RDWR | os.O_CLOEXEC)
    try:
        before = os.pread(fd, frame_size, 0)
        os.pwrite(fd, frame, 0)
    finally:
        os.close(fd)
    return not _same_frame(before, frame)


def record_frame_size(log: Path) -> int:
    """The size of a log's readable record frame, read from its header."""
    with open(log, "rb") as f:
        _, length = FRAME.unpack(f.read(FRAME.size))
    return int(length) + OVERHEAD


def _same_frame(before: bytes, after: bytes) -> bool:
    """Whether ``before`` is a record frame of the same shape as ``after`` (the result part
    of the body may differ)."""
    body_size = len(after) - OVERHEAD
    try:
        header = FRAME.unpack_from(before)
        (trailer,) = TRAILER.unpack_from(before, len(after) - TRAILER.size)
        decode_record(before[FRAME.size : FRAME.size + body_size])
    except (struct.error, ProtocolError):
        return False
    return header == (RECORD_STREAM, body_size) and trailer == body_size


def ended_result(
    wait_status: int,
    stats: CgroupStats,
    *,
    stop_reason: str | None,
    output_size: int,
    output_truncated: bool,
) -> JobResult:
    """How a job that ran ended: STOPPED if a stop (or its timeout) ended it, with
    ``stop_reason``; else EXITED if its command exited, FAILED if a signal killed it."""
    exit_code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
    if stop_reason is not None:
        state = JobState.STOPPED
    elif exit_code is not None:
        state = JobState.EXITED
    else:
        state = JobState.FAILED
    return JobResult(
        state=state,
        exit_code=exit_code,
        signal=os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
        oom_killed=stats.oom_killed,
        ended_at=time.time(),
        cpu_seconds=stats.cpu_seconds,
        peak_memory_bytes=stats.peak_memory_bytes,
        output_size=output_size,
        output_truncated=output_truncated,
        reason=stop_reason or (OOM_REASON if stats.oom_killed else ""),
    )
