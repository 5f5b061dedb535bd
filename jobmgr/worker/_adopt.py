"""A running job taken over from a dead launcher, from the copies of its handles the worker kept.

The worker holds a copy of each running job's pipe read ends and of its init's pidfd (see
JobHandles), so a launcher's death closes none of its pipes: the job writes on (into the pipe,
which holds up to a MiB, then waits), and no byte it wrote is lost. The new launcher is handed
those copies before its first hello and carries on where the dead one stopped: its log is
sealed (a frame the dead launcher was writing keeps the bytes it holds, see _frames.seal),
the init's report pipe still holds any report the dead launcher did not read, and the init is
watched through its pidfd. The init is no child of the new launcher (it was reparented to the
host's init, which reaps it), so its exit status comes from its "exit" report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ._capture import LogWriter
from ._errors import WorkerError
from ._frames import OVERHEAD, seal
from ._pidfd import ProcessHandle, pid_of
from ._records import DamagedRecord, load_record, log_path
from ._shim import JobHandles
from ._slot import Job, Slot, SlotState
from ._status import Stream
from .cgroups import CgroupDriver

STREAMS = {"stdout": Stream.STDOUT, "stderr": Stream.STDERR}


def handles_of(slot: Slot) -> tuple[JobHandles, list[int]]:
    """What a running job's JobHandles say, and the descriptors they name (the launcher's own:
    the channel sends copies)."""
    job, init = slot.job, slot.init
    assert job is not None and init is not None
    named = [(stream.name.lower(), fd) for fd, stream in slot.pipes.items()]
    if slot.report_fd is not None:
        named.append(("report", slot.report_fd))
    named.append(("init", init.fd))
    streams = tuple(name for name, _ in named)
    request = job.request
    handles = JobHandles(
        slot.id,
        streams,
        job.record,
        job.record_size,
        request.timeout,
        request.grace,
        request.output_cap,
    )
    return handles, [fd for _, fd in named]


class CannotAdopt(WorkerError):
    """The job cannot be taken over; the message says why (it is then finished as LOST)."""


def adopted_slot(
    handles: JobHandles,
    fds: list[int],
    jobs_dir: Path,
    driver_of: Callable[[str], CgroupDriver],
    on_truncate: Callable[[Slot, str], None],
) -> Slot:
    """The slot of a job adopted with ``fds`` (named by ``handles.streams``), RUNNING. On
    failure (CannotAdopt, OSError) the caller still owns ``fds``."""
    by_name = dict(zip(handles.streams, fds, strict=True))
    if "init" not in by_name:
        raise CannotAdopt("no pidfd of its init came with it")
    path = log_path(jobs_dir, handles.id)
    record = load_record(path)
    if not isinstance(record, DamagedRecord) and record[1] is not None:
        raise CannotAdopt("it has ended: its result is recorded")
    log_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = seal(log_fd)
        os.lseek(log_fd, size, os.SEEK_SET)
        cgroup = driver_of(handles.record.cgroup_parent).open(handles.id)
    except BaseException:
        os.close(log_fd)
        raise
    request = handles.request()
    slot = Slot(
        id=handles.id,
        uid=-1 if handles.record.uid is None else handles.record.uid,  # its init holds the lease
        cgroup=cgroup,
        limits=request.limits,
        path=path,
        log_fd=None,
        pipes={by_name[name]: stream for name, stream in STREAMS.items() if name in by_name},
        report_fd=by_name.get("report"),
        order_fd=None,
    )
    slot.init = ProcessHandle(by_name["init"], pid_of(by_name["init"]))
    slot.started = True
    job = slot.job = Job(request, -1, handles.record, record_size=handles.record_size)
    kept = max(0, size - handles.record_size - OVERHEAD)  # close enough for the output cap
    job.log = LogWriter.resumed(
        log_fd, request.output_cap, lambda reason: on_truncate(slot, reason), size, kept
    )
    for state in (SlotState.STARTING, SlotState.RUNNING):
        slot.move(state)
    return slot
