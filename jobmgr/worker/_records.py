"""What the launcher leaves on disk for a server that is not connected: ``job.json`` when a
job starts and ``result.json`` when it ends, in the job's directory beside its output log.
The worker folds them into its database when it (re)connects."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ._outputlog import valid_size
from ._status import JobState
from .cgroups import CgroupDriver

RESERVE = "result.reserve"
RESERVED_BYTES = 4096  # a result is a few hundred bytes of JSON


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: a crash leaves the old file or the new, never half of one."""
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(value).encode())
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def reserve_result(job_dir: Path) -> None:
    """Allocate the disk space of the job's result.json ahead of time."""
    fd = os.open(job_dir / RESERVE, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.posix_fallocate(fd, 0, RESERVED_BYTES)
    finally:
        os.close(fd)


def write_result(job_dir: Path, result: dict[str, Any]) -> None:
    """Write result.json into the space reserved at start, then put it in place: no new
    blocks are needed, so this works on a full disk."""
    data = json.dumps(result).encode()
    reserve = job_dir / RESERVE
    if len(data) > RESERVED_BYTES or not reserve.exists():
        write_json(job_dir / "result.json", result)
        return
    fd = os.open(reserve, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    os.replace(reserve, job_dir / "result.json")


def mark_lost(jobs_dir: Path, driver: CgroupDriver) -> None:
    """Record every job a dead launcher left unfinished as LOST; clear its cgroups.

    Runs as a new launcher starts, so no process of those jobs can still be supervised.
    """
    jobs_dir.mkdir(mode=0o700, exist_ok=True)
    for job_dir in jobs_dir.iterdir():
        if (job_dir / "result.json").exists():
            continue
        if not (job_dir / "job.json").exists():
            shutil.rmtree(job_dir, ignore_errors=True)
            continue
        result = {
            "state": JobState.LOST.value,
            "exit_code": None,
            "signal": None,
            "oom_killed": False,
            "ended_at": time.time(),
            "cpu_seconds": 0.0,
            "peak_memory_bytes": 0,
            "output_size": _cut_to_whole_frames(job_dir / "output.log"),
            "output_truncated": False,
            "reason": "its supervisor (the launcher) died; what was left of it was killed",
        }
        write_result(job_dir, result)
    for name in driver.existing():
        driver.open(name).destroy()


def _cut_to_whole_frames(path: Path) -> int:
    """Cut a log back to its whole frames (a crash may leave half of one); its new size."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = valid_size(fd)
        os.ftruncate(fd, size)
        return size
    finally:
        os.close(fd)
