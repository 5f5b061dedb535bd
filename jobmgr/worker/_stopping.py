"""Stopping a job, and telling how it ended.

Stopping is the init's to carry out, since only it can tell a stop from the job's own end
(see _pid1_supervise.c). The launcher, through the init's pidfd, sends it STOP_SIGNAL (the init
SIGTERMs every process of the job), after the grace KILL_SIGNAL (it SIGKILLs them), and, should
the init itself not end FORCE_AFTER seconds later, SIGKILL to the init, whose namespace dies
with it. A timeout is a stop with the job's grace.

The init reports whether a stop reached the job before it ended: a job that ended by itself
first is EXITED (or FAILED) with its own status, and its Stop says it had already ended.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping

from ._deadlines import Deadline, Deadlines
from ._errors import WorkerError
from ._records import ended_result
from ._shim import KILL_SIGNAL, STOP_SIGNAL, JobResult
from ._slot import Slot, SlotState
from .cgroups import CgroupStats

FORCE_AFTER = 2.0  # seconds an init has to end after KILL_SIGNAL
OUTSIDE_STOP = "stopped by a signal sent to its init from outside jobmgr"
log = logging.getLogger("jobmgr.launcher")


class Stopping:
    """The stops under way and the timeouts to come, as deadlines."""

    def __init__(self) -> None:
        self._deadlines = Deadlines()

    def next_in(self) -> float | None:
        return self._deadlines.next_in()

    def time_out(self, slot: Slot, delay: float) -> None:
        """Stop the job in ``delay`` seconds, with its grace, if it still runs."""
        self._deadlines.add(delay, Deadline.TIMEOUT, slot.id)

    def request(self, slot: Slot, grace: float, reason: str) -> None:
        """Ask the init to SIGTERM the job (nothing, with no grace), and to SIGKILL it after
        ``grace`` seconds. A job whose end the init has reported already is left to end."""
        job, init = slot.job, slot.init
        assert job is not None and init is not None
        if slot.state is SlotState.RUNNING:
            slot.move(SlotState.STOPPING)
            job.stop_reason = reason
            if grace > 0 and slot.exit_report is None:
                init.send(STOP_SIGNAL)
        self._deadlines.add(grace, Deadline.KILL, slot.id)

    def fire(self, jobs: Mapping[str, Slot]) -> None:
        """Act on the deadlines that have fallen due."""
        for kind, job_id in self._deadlines.due():
            slot = jobs.get(job_id)
            if slot is None or slot.job is None or slot.init is None:
                continue
            if slot.exit_report is not None or slot.init.ended:
                continue  # it is ending: what is left dies with its namespace
            if kind is Deadline.KILL:
                slot.init.send(KILL_SIGNAL)
                self._deadlines.add(FORCE_AFTER, Deadline.FORCE, slot.id)
            elif kind is Deadline.FORCE:
                log.error("job %s: its init did not end after SIGKILL of the job", slot.id)
                slot.init.send(signal.SIGKILL)
            elif kind is Deadline.TIMEOUT and slot.state is SlotState.RUNNING:
                ran = time.time() - slot.job.record.started_at
                self.request(slot, slot.job.request.grace, f"timed out after {ran:.1f}s")


def final_stats(slot: Slot) -> CgroupStats:
    """The usage figures of an ended slot's cgroup; zeros, said in the log, if unreadable."""
    try:
        return slot.cgroup.stats()
    except (OSError, WorkerError) as exc:
        log.error("job %s: no usage figures: %s", slot.id, exc)
        return CgroupStats(cpu_seconds=0.0, peak_memory_bytes=0, oom_killed=False)


def job_result(slot: Slot, stats: CgroupStats) -> JobResult:
    """How the job of an ended slot ended: from its init's exit report; failing that (the
    init died without a word: SIGKILLed, by FORCE if a stop was asked), from the init's own
    wait status."""
    job, init = slot.job, slot.init
    assert job is not None and job.log is not None and init is not None
    report = slot.exit_report
    if report is not None:
        wait_status, stopped = report.wait_status, report.stopped
    else:
        wait_status = signal.SIGKILL if init.status is None else init.status
        stopped = bool(job.stop_reason)
    return ended_result(
        wait_status,
        stats,
        stop_reason=(job.stop_reason or OUTSIDE_STOP) if stopped else None,
        output_size=job.log.size,
        output_truncated=job.log.truncated,
    )
