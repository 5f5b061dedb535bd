"""What the launcher leaves on disk for a server that is not connected: the job's record, as
the first frame of its output log, ``jobs/<id>.log``.

The record frame (stream 0, which readers skip) holds ``{"job": ..., "result": ...}`` as JSON,
padded with spaces. It is written when the job starts, with ``result`` null, and overwritten
in place when the job ends: the space is the file's already, so a job that ends on a full disk
is still recorded. A job costs one file and no directory: on ext4 each new inode cost the
launcher about a millisecond in bursts. The worker folds these records into its database when
it (re)connects.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ._outputlog import FRAME, RECORD_STREAM, TRAILER, valid_size
from ._status import JobState
from .cgroups import CgroupDriver

LOG_SUFFIX = ".log"
RESULT_ROOM = 2048  # a result is a few hundred bytes of JSON


def log_path(jobs_dir: Path, job_id: str) -> Path:
    """Where job ``job_id``'s output log is kept."""
    return jobs_dir / (job_id + LOG_SUFFIX)


def logged_jobs(jobs_dir: Path) -> list[str]:
    """The ids of the jobs with a log in ``jobs_dir``."""
    return [p.name.removesuffix(LOG_SUFFIX) for p in jobs_dir.glob("*" + LOG_SUFFIX)]


def record_frame(job: dict[str, Any]) -> bytes:
    """The first frame of a job's log: its record, with room for its result."""
    body = json.dumps({"job": job, "result": None}).encode() + b" " * RESULT_ROOM
    return FRAME.pack(RECORD_STREAM, len(body)) + body + TRAILER.pack(len(body))


def read_record(log: Path) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The job record and result (None while it runs) from a log; None if it has none."""
    try:
        with open(log, "rb") as f:
            head = f.read(FRAME.size)
            if len(head) < FRAME.size:
                return None
            stream, length = FRAME.unpack(head)
            if stream != RECORD_STREAM:
                return None
            record = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    return record["job"], record["result"]


def write_result(log: Path, job: dict[str, Any], result: dict[str, Any]) -> None:
    """Put ``result`` into the record frame, in place."""
    fd = os.open(log, os.O_RDWR | os.O_CLOEXEC)
    try:
        _, length = FRAME.unpack(os.pread(fd, FRAME.size, 0))
        body = json.dumps({"job": job, "result": result}).encode()
        if len(body) > length:
            raise OSError(f"the result of {log.stem} does not fit its record frame")
        os.pwrite(fd, body.ljust(length), FRAME.size)
    finally:
        os.close(fd)


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
        result = {
            "state": JobState.LOST.value,
            "exit_code": None,
            "signal": None,
            "oom_killed": False,
            "ended_at": time.time(),
            "cpu_seconds": 0.0,
            "peak_memory_bytes": 0,
            "output_size": _cut_to_whole_frames(log),
            "output_truncated": False,
            "reason": "its supervisor (the launcher) died; what was left of it was killed",
        }
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
