"""What a new launcher does with what a dead one left, before it makes its first spare.

It runs once, at the launcher's first hello, after the server has handed back the jobs it can
re-adopt (see _adopt). Every other job whose record has no result is finished as LOST, but
only once none of its processes is alive: they are killed first, in the cgroup its record
names, whatever parent this launcher was started with. Then every cgroup no running job owns
is removed, under this launcher's parent and under the parents earlier launchers of this state
directory used (listed in PARENTS_FILE). Nothing of a log is deleted: a damaged one is left as
it is, and one cut off mid-frame keeps every byte it holds (see _frames.seal).

The LOST job's end is dated truthfully: now, if its processes were still running and were
killed; else when its launcher was last seen alive (the launcher touches launcher.pid every
HEARTBEAT seconds), since its processes died with it or after.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from pathlib import Path

from ._errors import WorkerError
from ._frames import seal
from ._records import (
    DamagedRecord,
    load_record,
    log_path,
    logged_jobs,
    record_frame_size,
    write_result,
)
from ._shim import DamagedLog, JobRecord, JobResult
from ._statedir import FILE_MODE
from ._status import JobState
from .cgroups import CgroupDriver, detect_driver

PARENTS_FILE = "cgroup-parents"
HEARTBEAT = 1.0  # seconds between touches of launcher.pid
log = logging.getLogger("jobmgr.launcher")


def reclaim(
    state_dir: Path, driver: CgroupDriver, keep: set[str], last_seen: float | None
) -> tuple[list[str], list[DamagedLog]]:
    """Finish as LOST every unfinished job not in ``keep`` (the jobs this launcher runs),
    then remove every job cgroup not in ``keep``. Returns the jobs finished as LOST and the
    logs whose record frame is damaged."""
    drivers = _Drivers(driver)
    lost: list[str] = []
    damaged: list[DamagedLog] = []
    jobs_dir = state_dir / "jobs"
    jobs_dir.mkdir(mode=0o700, exist_ok=True)
    for job_id in logged_jobs(jobs_dir):
        if job_id in keep:
            continue
        path = log_path(jobs_dir, job_id)
        record = load_record(path)
        if isinstance(record, DamagedRecord):
            log.error("job %s: %s; its log is kept as it is", job_id, record.reason)
            damaged.append(DamagedLog(job_id, record.reason))
            continue  # its cgroup, if any, goes in the sweep below
        job, result = record
        if result is None:
            _finish_lost(path, job, drivers.of(job.cgroup_parent), last_seen)
            lost.append(job_id)
    parents = _listed_parents(state_dir) | {driver.parent}
    still_there = {driver.parent}
    for parent in sorted(parents):
        parent_driver = drivers.of(parent)
        for name in parent_driver.existing():
            if name not in keep:
                _destroy(parent_driver, name)
        if parent != driver.parent:
            parent_driver.remove_parent()
            if parent_driver.existing():
                still_there.add(parent)
    _list_parents(state_dir, still_there)
    return lost, damaged


def _finish_lost(
    path: Path, job: JobRecord, driver: CgroupDriver, last_seen: float | None
) -> None:
    cgroup = driver.open(job.id)
    alive = len(cgroup.pids())  # a count only: nothing is sent to these numbers
    left = ""
    try:
        cgroup.destroy()  # kills what is left, each process through a checked pidfd
    except (OSError, WorkerError) as exc:
        left = f"; some of its processes could not be killed: {exc}"
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = seal(fd)
    finally:
        os.close(fd)
    now = time.time()
    seen = f" (last seen alive at {_when(last_seen)})" if last_seen is not None else ""
    if alive:
        ended_at, how = now, f"its {alive} remaining processes were killed"
    else:
        ended_at, how = last_seen or now, "its processes ended with it"
    reason = f"its supervisor (the job launcher) died{seen}; {how}{left}"
    result = JobResult(
        state=JobState.LOST,
        exit_code=None,
        signal=None,
        oom_killed=False,
        ended_at=ended_at,
        cpu_seconds=0.0,
        peak_memory_bytes=0,
        output_size=size,
        reason=reason,
    )
    write_result(path, job, result, record_frame_size(path))
    log.warning("job %s: LOST: %s", job.id, reason)


def _destroy(driver: CgroupDriver, name: str) -> None:
    try:
        driver.open(name).destroy()
    except (OSError, WorkerError, ValueError) as exc:
        log.error("cgroup %s/%s could not be removed: %s", driver.parent, name, exc)


class _Drivers:
    """A driver per cgroup parent, the launcher's own for its parent (and for "")."""

    def __init__(self, own: CgroupDriver) -> None:
        self._by_parent: dict[str, CgroupDriver] = {"": own, own.parent: own}

    def of(self, parent: str) -> CgroupDriver:
        if parent not in self._by_parent:
            self._by_parent[parent] = detect_driver(parent)
        return self._by_parent[parent]


def _listed_parents(state_dir: Path) -> set[str]:
    try:
        return set((state_dir / PARENTS_FILE).read_text().split())
    except FileNotFoundError:
        return set()


def _list_parents(state_dir: Path, parents: set[str]) -> None:
    path = state_dir / PARENTS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, "".join(f"{p}\n" for p in sorted(parents)).encode())
    finally:
        os.close(fd)


def _when(moment: float | None) -> str:
    assert moment is not None
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
