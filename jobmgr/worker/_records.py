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
import time
from pathlib import Path

from ._outputlog import FRAME, RECORD_STREAM, TRAILER, valid_size
from ._shim import JobRecord, JobResult, ProtocolError, decode_record, encode_record
from ._status import JobState
from .cgroups import CgroupDriver, CgroupStats

LOG_SUFFIX = ".log"
OOM_REASON = "the memory limit was exceeded and the OOM killer fired"
LOST_REASON = "its supervisor (the launcher) died; what was left of it was killed"
RESULT_ROOM = 2048  # a result is a few hundred bytes of JSON


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


def read_record(log: Path) -> tuple[JobRecord, JobResult | None] | None:
    """The job record and result (None while it runs) from a log; None if it has none that
    can be read."""
    try:
        with open(log, "rb") as f:
            head = f.read(FRAME.size)
            if len(head) < FRAME.size:
                return None
            stream, length = FRAME.unpack(head)
            if stream != RECORD_STREAM:
                return None
            return decode_record(f.read(length))
    except (OSError, ProtocolError):
        return None


def write_result(log: Path, job: JobRecord, result: JobResult) -> None:
    """Put ``result`` into the record frame, in place."""
    fd = os.open(log, os.O_RDWR | os.O_CLOEXEC)
    try:
        _, length = FRAME.unpack(os.pread(fd, FRAME.size, 0))
        body = encode_record(job, result)
        if len(body) > length:
            raise OSError(f"the result of {log.stem} does not fit its record frame")
        os.pwrite(fd, body.ljust(length), FRAME.size)
    finally:
        os.close(fd)


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


def mark_lost(jobs_dir: Path, driver: CgroupDriver) -> None:
    """Record every job a dead launcher left unfinished as LOST; clear its cgroups.

    Runs as a new launcher starts, so no process of those jobs can still be supervised.
    """
    jobs_dir.mkdir(mode=0o700, exist_ok=True)
    for job_id in logged_jobs(jobs_dir):
        log = log_path(jobs_dir, job_id)
        record = read_record(log)
        if record is None:
            log.unlink(missing_ok=True)  # never got as far as starting
            continue
        job, result = record
        if result is not None:
            continue
        result = JobResult(
            state=JobState.LOST,
            exit_code=None,
            signal=None,
            oom_killed=False,
            ended_at=time.time(),
            cpu_seconds=0.0,
            peak_memory_bytes=0,
            output_size=_cut_to_whole_frames(log),
            reason=LOST_REASON,
        )
        write_result(log, job, result)
    for name in driver.existing():
        driver.open(name).destroy()


def _cut_to_whole_frames(path: Path) -> int:
    """Cut a log back to its whole frames (a crash may leave half of one); its new size."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = valid_size(fd)
        os.ftruncate(fd, size)
        return size
    finally:
        os.close(fd)
