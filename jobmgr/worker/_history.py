"""What a worker learns as it starts: the jobs in its database and logs, and which of them
the launcher still runs.

The database is written at each change the worker sees; the record frame at the head of each
job's log is what the launcher wrote while no server was connected. A job's status is taken
from whichever knows more, and a job the launcher no longer runs and that left no result is
LOST.
"""

from __future__ import annotations

import time

from ._jobtable import JobEntry, JobTable
from ._outputlog import OutputLog
from ._records import log_path, logged_jobs, read_record
from ._shim import RunningJob
from ._status import JobState, JobStatus


def load_history(table: JobTable) -> None:
    """Jobs from the database, plus what the launcher recorded while no server was here."""
    known = {status.id: status for status in table.store.load()}
    entries = []
    for job_id in logged_jobs(table.jobs_dir):
        entry = _load_job(table, job_id, known.get(job_id))
        if entry is not None:
            entries.append(entry)
    table.load(entries)
    for job_id in known.keys() - table.ids():
        table.store.delete([job_id])  # its log is gone: pruned by hand


def adopt(table: JobTable, running_jobs: tuple[RunningJob, ...]) -> None:
    """Take the jobs the launcher runs (with their output sizes); a job it does not know is
    lost."""
    running = {job.id: job.size for job in running_jobs}
    for job_id in running.keys() - table.ids():
        # Started on the request of a server that died before the reply, after
        # load_history looked: the launcher wrote its record before answering hello.
        entry = _load_job(table, job_id, None)
        if entry is None:
            continue
        table.add(entry, save=False)
        # Its exit may have been announced before it was in the table; the record has it.
        _exit_if_recorded(table, entry)
    for entry in table.running():
        job_id = entry.status.id
        if job_id in running:
            entry.log.advance(running[job_id])
            continue
        if _exit_if_recorded(table, entry):
            continue
        table.update(
            job_id,
            state=JobState.LOST,
            ended_at=time.time(),
            reason="the launcher has no record of it",
        )
        entry.log.advance(_file_size(entry.log), done=True)


def _file_size(log: OutputLog) -> int:
    try:
        return log.path.stat().st_size
    except FileNotFoundError:
        return 0


def _load_job(table: JobTable, job_id: str, status: JobStatus | None) -> JobEntry | None:
    """A job from its database row and its log's record frame, whichever knows more."""
    path = log_path(table.jobs_dir, job_id)
    if status is None or status.state is JobState.RUNNING:
        record = read_record(path)
        if record is None:
            return None  # a start that never got as far as its record
        job, result = record
        status = status or job.status()
        if result is not None:
            status = result.applied_to(status)
        table.store.save(status)
    log = OutputLog(path)
    if status.terminated:
        log.advance(_file_size(log), done=True)
    return JobEntry(status, log)


def _exit_if_recorded(table: JobTable, entry: JobEntry) -> bool:
    """Take the job's result from its log's record, if the launcher wrote one there."""
    record = read_record(entry.log.path)
    if record is None or record[1] is None:
        return False
    table.record_exit(entry.status.id, record[1])
    return True
