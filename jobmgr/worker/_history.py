"""What a worker learns as it starts: the jobs in its database and logs, and which of them
the launcher still runs.

The database is written at each change the worker sees; the record frame at the head of each
job's log is what the launcher wrote while no server was connected. A job's status is taken
from whichever knows more, and a job the launcher no longer runs and that left no result is
LOST.

A log whose record frame is damaged is never dropped: its job keeps its database row (or, with
none, an entry of its own under its id), the launcher's copy of its record while it runs, and
its output. Each such job costs one log line, written once the launcher has said whether it
still runs it.
"""

from __future__ import annotations

import logging
import time

from ._jobtable import JobEntry, JobTable
from ._outputlog import OutputLog
from ._records import DamagedRecord, load_record, log_path, logged_jobs
from ._shim import HelloReply, RunningJob
from ._spec import Limits
from ._status import JobState, JobStatus

log = logging.getLogger("jobmgr.worker")
DAMAGED = "its log's record frame is damaged"


def load_history(table: JobTable) -> None:
    """Jobs from the database, plus what the launcher recorded while no server was here."""
    known = {status.id: status for status in table.store.load()}
    jobs = logged_jobs(table.jobs_dir)
    entries = [_load_job(table, job_id, known.get(job_id)) for job_id in jobs]
    table.load(entries)
    for job_id in known.keys() - table.ids():
        table.store.delete([job_id])  # its log is gone: pruned by hand


def adopt(table: JobTable, hello: HelloReply) -> None:
    """Take the jobs the launcher runs (with their output sizes and records), and those it
    finished as LOST; a job it does not run that left no result is lost."""
    running_jobs = hello.running
    running = {job.id: job for job in running_jobs}
    for damaged in hello.damaged:
        table.damaged.setdefault(damaged.id, damaged.reason)
    for job_id in hello.reclaimed:
        if table.find(job_id) is None:  # started for a server that never heard back
            table.add(_load_job(table, job_id, None), save=False)
    for job in running_jobs:
        if table.find(job.id) is None:
            # Started on the request of a server that died before the reply, after
            # load_history looked: the launcher wrote its record before answering hello.
            entry = _load_job(table, job.id, job.record.status() if job.record else None)
            table.add(entry, save=False)
            # Its exit may have been announced before it was in the table; the record has it.
            _exit_if_recorded(table, entry)
    for entry in table.running():
        job_id = entry.status.id
        damage = table.damaged.pop(job_id, "")
        if job_id in running:
            if damage:
                _from_launchers_record(table, entry, running[job_id], damage)
            entry.log.advance(running[job_id].size)
            continue
        if _exit_if_recorded(table, entry):
            continue
        reason = "the launcher has no record of it"
        if damage:
            reason = f"its log's record frame is damaged ({damage}) and no launcher runs it"
            log.error("job %s: %s; listed as LOST, its output kept", job_id, reason)
        table.update(job_id, state=JobState.LOST, ended_at=time.time(), reason=reason)
        lost = f"the job was lost: {reason}"
        entry.log.advance(_file_size(entry.log), done=True, incomplete=lost)
    for job_id, damage in table.damaged.items():
        _mark_damaged(table, job_id, damage)
    table.damaged.clear()


def _mark_damaged(table: JobTable, job_id: str, damage: str) -> None:
    """A finished job whose record frame is damaged: its status says so, once."""
    entry = table.find(job_id)
    log.error(
        "job %s: its log's record frame is damaged (%s); its status is the database's, its"
        " output kept",
        job_id,
        damage,
    )
    if entry is None or DAMAGED in entry.status.reason:
        return
    note = f"{DAMAGED} ({damage})"
    reason = f"{entry.status.reason}; {note}" if entry.status.reason else note
    table.update(job_id, reason=reason)


def _from_launchers_record(
    table: JobTable, entry: JobEntry, job: RunningJob, damage: str
) -> None:
    if job.record is not None and not entry.status.argv:  # known from the damaged log alone
        known = job.record.status()
        table.update(
            entry.status.id,
            argv=known.argv,
            owner=known.owner,
            limits=known.limits,
            started_at=known.started_at,
            request_id=known.request_id,
        )
    log.error(
        "job %s: its log's record frame is damaged (%s); it still runs, known from its"
        " launcher's record, which is written back when it ends",
        entry.status.id,
        damage,
    )


def _file_size(log: OutputLog) -> int:
    try:
        return log.path.stat().st_size
    except FileNotFoundError:
        return 0


def _load_job(table: JobTable, job_id: str, status: JobStatus | None) -> JobEntry:
    """A job from its database row and its log's record frame, whichever knows more."""
    path = log_path(table.jobs_dir, job_id)
    if status is None or status.state is JobState.RUNNING:
        record = load_record(path)
        if isinstance(record, DamagedRecord):
            table.damaged[job_id] = record.reason
            status = status or _unknown(job_id, path.stat().st_mtime)
        else:
            job, result = record
            status = status or job.status()
            if result is not None:
                status = result.applied_to(status)
            table.store.save(status)
    log = OutputLog(path)
    if status.terminated:
        lost = f"the job was lost: {status.reason}" if status.state is JobState.LOST else ""
        log.advance(_file_size(log), done=True, incomplete=lost)
    return JobEntry(status, log)


def _unknown(job_id: str, started_at: float) -> JobStatus:
    """A job known only by its log, whose record cannot be read: its id and output."""
    return JobStatus(
        id=job_id,
        argv=(),
        owner="",
        limits=Limits(),
        state=JobState.RUNNING,
        started_at=started_at,
    )


def _exit_if_recorded(table: JobTable, entry: JobEntry) -> bool:
    """Take the job's result from its log's record, if the launcher wrote one there."""
    record = load_record(entry.log.path)
    if isinstance(record, DamagedRecord) or record[1] is None:
        return False
    table.record_exit(entry.status.id, record[1])
    return True
