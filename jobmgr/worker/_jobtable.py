"""The worker's table of jobs: each job's status and output log, kept in step with the
database, the set of running jobs and the order in which jobs ended."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import JobNotFound
from ._outputlog import OutputLog
from ._records import log_path
from ._shim import JobResult
from ._status import JobState, JobStatus
from ._store import JobStore


@dataclass
class JobEntry:
    status: JobStatus
    log: OutputLog


@dataclass(frozen=True)
class Retention:
    """Which finished jobs (and their output) to keep: at most ``count``, none older than
    ``max_age`` seconds (after they ended). None keeps everything."""

    count: int | None = None
    max_age: float | None = None


KEEP_ALL = Retention()


class JobTable:
    """Every job known, thread-safe; each change is saved to ``store``.

    The running set, the order of ends and the index of request ids are kept in step with
    the table, so that a Start or an exit costs the same with 100 000 jobs known as with ten.
    """

    def __init__(self, store: JobStore, jobs_dir: Path, retention: Retention) -> None:
        self.store = store
        self.jobs_dir = jobs_dir
        self._retention = retention
        self._jobs: dict[str, JobEntry] = {}
        self._running: set[str] = set()
        self._ended: dict[str, float] = {}  # finished job -> ended_at, oldest first
        self._by_request: dict[tuple[str, str], str] = {}  # (owner, request id) -> job id
        self.damaged: dict[str, str] = {}  # job -> what is wrong with its record frame
        self._lock = threading.Lock()

    def get(self, job_id: str) -> JobEntry:
        """The job's entry; JobNotFound if there is none."""
        entry = self.find(job_id)
        if entry is None:
            raise JobNotFound(job_id)
        return entry

    def find(self, job_id: str) -> JobEntry | None:
        with self._lock:
            return self._jobs.get(job_id)

    def entries(self) -> list[JobEntry]:
        with self._lock:
            return list(self._jobs.values())

    def by_request(self, owner: str, request_id: str) -> JobEntry | None:
        """The job ``owner`` started with ``request_id``, if any."""
        with self._lock:
            job_id = self._by_request.get((owner, request_id))
            return None if job_id is None else self._jobs.get(job_id)

    def running(self) -> list[JobEntry]:
        with self._lock:
            return [self._jobs[job_id] for job_id in self._running]

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._jobs)

    def add(self, entry: JobEntry, *, save: bool = True) -> None:
        """Put a job in the table (and in the database, if ``save``)."""
        with self._lock:
            self._jobs[entry.status.id] = entry
            self._track(entry.status)
        if save:
            self.store.save(entry.status)

    def load(self, entries: list[JobEntry]) -> None:
        """Fill the table from history, ends in the order they happened."""
        with self._lock:
            for entry in entries:
                self._jobs[entry.status.id] = entry
            for status in sorted((e.status for e in entries), key=_ended_at):
                self._track(status)

    def update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                return
            entry.status = dataclasses.replace(entry.status, **changes)
            self._track(entry.status)
        self.store.save(entry.status)

    def record_exit(self, job_id: str, result: JobResult) -> None:
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                return
            entry.status = result.applied_to(entry.status)
            self._track(entry.status)
        self.store.save(entry.status)
        lost = result.state is JobState.LOST
        incomplete = f"the job was lost: {result.reason}" if lost else ""
        entry.log.advance(result.output_size, done=True, incomplete=incomplete)

    def prune(self) -> None:
        """Drop the finished jobs the retention policy no longer keeps, oldest first."""
        count, max_age = self._retention.count, self._retention.max_age
        if count is None and max_age is None:
            return
        cutoff = -1.0 if max_age is None else time.time() - max_age
        doomed: list[str] = []
        with self._lock:
            while self._ended:
                oldest, ended_at = next(iter(self._ended.items()))
                if (count is None or len(self._ended) <= count) and ended_at >= cutoff:
                    break
                del self._ended[oldest]
                entry = self._jobs.pop(oldest, None)
                if entry is not None and entry.status.request_id:
                    self._by_request.pop((entry.status.owner, entry.status.request_id), None)
                doomed.append(oldest)
        if doomed:
            self.store.delete(doomed)
            for job_id in doomed:
                log_path(self.jobs_dir, job_id).unlink(missing_ok=True)

    def _track(self, status: JobStatus) -> None:
        """Note a job's new status in the running set, the order of ends and the index of
        request ids (lock held)."""
        if status.request_id:
            self._by_request[(status.owner, status.request_id)] = status.id
        if not status.terminated:
            self._running.add(status.id)
        elif status.id not in self._ended:
            self._running.discard(status.id)
            self._ended[status.id] = _ended_at(status)


def _ended_at(status: JobStatus) -> float:
    return status.ended_at or 0.0
