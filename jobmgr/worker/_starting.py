"""Starting a job in a spare slot: its limits, its record, then its order.

A start is checked against its caller's deadline before the slot is taken and again just
before the order is sent: past it, the caller has stopped waiting and would never learn the
job's id, so the job is not launched at all.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

from ._capture import LogWriter
from ._errors import WorkerError
from ._pool import refuse_if_exhausted, refuse_if_full
from ._records import log_path, record_frame
from ._shim import StartRefused, StartRequest, StartStage
from ._slot import Job, Slot


def prepare(slot: Slot, job: Job, jobs_dir: Path, on_truncate: Callable[[str], None]) -> None:
    """Give the slot's cgroup the job's limits (a spare has the defaults already), and make
    its file the job's log, record first."""
    try:
        slot.cgroup.change_limits(slot.limits, job.request.limits)
        slot.limits = job.request.limits
    except (WorkerError, OSError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if isinstance(cause, OSError):
            refuse_if_exhausted(cause)  # out of descriptors: not the limits' fault
        if isinstance(exc, OSError):
            raise
        message = f"the kernel refused the job's limits: {exc}"
        raise StartRefused(StartStage.LIMITS, message) from exc
    assert slot.log_fd is not None
    header = record_frame(job.record)
    try:
        if os.write(slot.log_fd, header) != len(header):
            raise OSError(errno.ENOSPC, "No space left on device")
        path = log_path(jobs_dir, slot.id)
        os.rename(slot.path, path)
        slot.path = path
    except OSError as exc:
        refuse_if_full(exc)
        raise
    # No O_APPEND needed: this process is the file's only writer.
    job.log = LogWriter(slot.log_fd, job.request.output_cap, on_truncate)
    slot.log_fd = None
    job.log.size = job.record_size = len(header)


def refuse_if_past(request: StartRequest) -> None:
    """Refuse a start whose caller has stopped waiting: nobody would learn its job's id."""
    if request.deadline is not None and time.monotonic() >= request.deadline:
        late = time.monotonic() - request.deadline
        raise StartRefused(
            StartStage.DEADLINE,
            f"the caller's deadline passed {late:.1f}s before the job could be launched; "
            "it was not started",
        )


def send_order(slot: Slot, order: bytes) -> None:
    """Write the init its order; an init that died while warming answers the start itself,
    by its end."""
    assert slot.order_fd is not None
    view = memoryview(order)
    try:
        while view:
            view = view[os.write(slot.order_fd, view) :]
    except OSError:
        pass
