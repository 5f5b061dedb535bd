"""Supervision: every slot's pipes and init, and every job from its start to its result.

The launcher holds the read ends of each job's stdout and stderr and appends them to the
job's log (see _capture), and it is the child subreaper every init is reparented to, so it
reaps them all. A job's output and exit status are therefore kept while no server is
connected. A job ends once its pipes are closed and its init reaped: then its cgroup's
figures are read, the cgroup removed, and the result written into its record frame and sent.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from pathlib import Path

from ._capture import LogWriter, read_some
from ._channel import ServerChannel
from ._deadlines import Deadline, Deadlines
from ._errors import WorkerError
from ._host_sockets import HostSockets, masks_for
from ._pool import WarmPool, close_order, refuse_if_full
from ._records import ended_result, log_path, record_frame, write_result
from ._shim import (
    InitExited,
    InitFailed,
    InitPid,
    InitReady,
    InitReport,
    InitStarted,
    JobExited,
    OutputAdvanced,
    OutputTruncated,
    ProtocolError,
    RequestFailed,
    RunningJob,
    StartRefused,
    StartReply,
    StartRequest,
    StartStage,
    StopReply,
    encode_order,
    parse_report,
)
from ._slot import JOB_STATES, Job, Slot, SlotState
from .cgroups import CgroupDriver, CgroupStats

log = logging.getLogger("jobmgr.launcher")


class Supervisor:
    """The jobs (slots a start took) and the pool of spares, as one set of pipes and inits."""

    def __init__(
        self,
        state_dir: Path,
        driver: CgroupDriver,
        spares: int,
        sel: selectors.BaseSelector,
        channel: ServerChannel,
    ) -> None:
        self.jobs: dict[str, Slot] = {}
        self._jobs_dir = state_dir / "jobs"
        self._sel = sel
        self._channel = channel
        self._by_pid: dict[int, Slot] = {}
        self.unclaimed: dict[int, int] = {}  # reaped before their pid was known: pid -> status
        self._deadlines = Deadlines()
        self._sizes_to_announce: dict[str, int] = {}
        self._host_sockets = HostSockets()
        self.pool = WarmPool(state_dir, driver, spares, self._watch)

    @property
    def idle(self) -> bool:
        """True once no slot is left, spare or job."""
        return not self.jobs and not self.pool.spares

    def running(self) -> tuple[RunningJob, ...]:
        """The jobs the server should know, with their committed sizes (0 while starting)."""
        return tuple(
            RunningJob(slot.id, slot.size if slot.state in JOB_STATES else 0)
            for slot in self.jobs.values()
            if slot.state in JOB_STATES or slot.state is SlotState.STARTING
        )

    def next_deadline_in(self) -> float | None:
        return self._deadlines.next_in()

    # ---- starting -----------------------------------------------------------------------

    def start(self, req: int, request: StartRequest) -> None:
        """Give a spare the job: its limits, its record, then its order. The reply goes out
        when the init reports the command started (or why not)."""
        slot = self.pool.take()
        settings = self.pool.settings
        assert settings is not None  # a slot was made, so the pool was told how
        self.jobs[slot.id] = slot
        slot.move(SlotState.STARTING)
        uid = slot.uid if request.uid is None or request.root else request.uid
        slot.job = Job(request, req, request.record(slot.id, time.time(), uid))
        try:
            self._prepare(slot, slot.job)
            masks = masks_for(self._host_sockets.paths(), settings.hidden, request.rootfs)
        except BaseException:
            slot.move(SlotState.DISCARDED)
            close_order(slot)
            raise
        assert slot.order_fd is not None
        try:
            _write_all(slot.order_fd, encode_order(request, slot.uid, masks, settings))
        except OSError:
            pass  # the init died while warming; its end answers the start
        close_order(slot)
        if request.timeout:
            self._deadlines.add(request.timeout, Deadline.TIMEOUT, slot.id)

    def _prepare(self, slot: Slot, job: Job) -> None:
        """Limit the slot's cgroup, and make its file the job's log, record first."""
        try:
            slot.cgroup.set_limits(job.request.limits)
        except WorkerError as exc:
            message = f"the kernel refused the job's limits: {exc}"
            raise StartRefused(StartStage.LIMITS, message) from exc
        assert slot.log_fd is not None
        header = record_frame(job.record)
        try:
            if os.write(slot.log_fd, header) != len(header):
                raise OSError(errno.ENOSPC, "No space left on device")
            path = log_path(self._jobs_dir, slot.id)
            os.rename(slot.path, path)
            slot.path = path
        except OSError as exc:
            refuse_if_full(exc)
            raise
        # No O_APPEND needed: this process is the file's only writer.
        job.log = LogWriter(
            slot.log_fd, job.request.output_cap, lambda reason: self._truncated(slot, reason)
        )
        slot.log_fd = None
        job.log.size = len(header)

    def _started(self, slot: Slot) -> None:
        assert slot.job is not None
        slot.move(SlotState.RUNNING)
        self.pool.started()
        reply = StartReply(slot.id, slot.job.record.started_at)
        self._channel.send_reply(slot.job.start_req, reply)

    def _start_failed(self, slot: Slot, failure: RequestFailed) -> None:
        assert slot.job is not None
        slot.move(SlotState.DISCARDED)
        self._channel.send_reply(slot.job.start_req, failure)

    # ---- the init's reports and the job's output ----------------------------------------

    def _watch(self, slot: Slot) -> None:
        for fd in slot.pipes:
            self._sel.register(fd, selectors.EVENT_READ, self._pipe_handler(slot, fd))
        assert slot.report_fd is not None
        self._sel.register(slot.report_fd, selectors.EVENT_READ, lambda _: self._on_report(slot))

    def _on_report(self, slot: Slot) -> None:
        assert slot.report_fd is not None
        data = read_some(slot.report_fd)
        if not data:
            self._close_fd(slot.report_fd)
            slot.report_fd = None
            self._end_if_gone(slot)
            return
        slot.report_buf += data
        *lines, slot.report_buf = slot.report_buf.split(b"\n")
        for line in lines:
            try:
                report = parse_report(line)
            except ProtocolError as exc:
                log.error("slot %s: %s", slot.id, exc)
                continue
            self._on_init(slot, report)
        self._end_if_gone(slot)

    def _on_init(self, slot: Slot, report: InitReport) -> None:
        match report:
            case InitPid(pid=pid):
                slot.init_pid = pid
                self._by_pid[pid] = slot
                if pid in self.unclaimed:
                    slot.init_status = self.unclaimed.pop(pid)
            case InitReady() if slot.state is SlotState.WARMING:
                slot.move(SlotState.READY)
            case InitReady():
                pass  # a start took it while it warmed
            case InitStarted():
                self._started(slot)
            case InitFailed(stage=stage, message=message) if slot.job is None:
                self.pool.failed_to_warm(slot, f"{stage.value} {message}")
            case InitFailed(stage=stage, message=message) if slot.state is SlotState.STARTING:
                self._start_failed(slot, RequestFailed(message, stage))
            case InitFailed():
                pass  # a start refused already: the init's own failure adds nothing
            case InitExited(wait_status=status):
                slot.job_status = status

    def _pipe_handler(self, slot: Slot, fd: int) -> Callable[[int], None]:
        return lambda _: self._on_pipe(slot, fd)

    def _on_pipe(self, slot: Slot, fd: int) -> None:
        writer = slot.job.log if slot.job is not None else None
        try:
            if writer is not None:
                more = writer.take(fd, slot.pipes[fd])
            else:  # no job in it yet: its init never writes there, so this is EOF
                more = False if read_some(fd) == b"" else None
        except Exception as exc:
            # The pipe stays readable, so carrying on would spin this loop on the same error
            # (and fill launcher.log). Give the pipe up: the job's next write to it fails.
            log.exception("job %s: reading its output failed", slot.id)
            if writer is not None:
                writer.give_up(f"reading the job's output failed: {exc}")
            more = False
        if more is False:
            self._close_fd(fd)
            del slot.pipes[fd]
            self._end_if_gone(slot)
        elif more:
            self._sizes_to_announce[slot.id] = slot.size

    def _truncated(self, slot: Slot, reason: str) -> None:
        log.warning("job %s: output truncated: %s", slot.id, reason)
        self._channel.send_event(OutputTruncated(slot.id, reason))

    def announce_sizes(self) -> None:
        """Tell the server how far each job's log is committed; held back for a job still
        starting, since the server learns of a job from its start reply."""
        pending = {}
        for job_id, size in self._sizes_to_announce.items():
            slot = self.jobs.get(job_id)
            if slot is not None and slot.state is SlotState.STARTING:
                pending[job_id] = size
            else:
                self._channel.send_event(OutputAdvanced(job_id, size))
        self._sizes_to_announce = pending

    # ---- stopping -----------------------------------------------------------------------

    def stop(self, req: int, job_id: str, grace: float) -> None:
        slot = self.jobs.get(job_id)
        if slot is None or slot.job is None or slot.state not in JOB_STATES:
            # Ended already (or never ran): the server has its record.
            self._channel.send_reply(req, StopReply(already_ended=True))
            return
        slot.job.stop_waiters.append(req)
        self.request_stop(slot, grace, "stopped on request")

    def stop_all(self, grace: float, reason: str) -> None:
        for slot in list(self.jobs.values()):
            if slot.state in JOB_STATES:
                self.request_stop(slot, grace, reason)

    def request_stop(self, slot: Slot, grace: float, reason: str) -> None:
        assert slot.job is not None
        if slot.state is SlotState.RUNNING:
            slot.move(SlotState.STOPPING)
            slot.job.stop_reason = reason
            if grace > 0:  # no grace means SIGKILL only: a SIGTERM first could end it instead
                self._signal_all(slot, signal.SIGTERM)
        self._deadlines.add(grace, Deadline.KILL, slot.id)

    def _signal_all(self, slot: Slot, signo: int) -> None:
        """Signal every process of the job but its init, which dies with its main process."""
        for pid in slot.cgroup.pids():
            if pid != slot.init_pid:
                try:
                    os.kill(pid, signo)
                except ProcessLookupError:
                    pass

    def _kill(self, slot: Slot) -> None:
        # SIGKILL to PID 1 of a namespace takes every process in it along.
        if slot.init_pid is not None and slot.init_status is None:
            try:
                os.kill(slot.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        slot.cgroup.kill_all()

    def fire_deadlines(self) -> None:
        for kind, job_id in self._deadlines.due():
            slot = self.jobs.get(job_id)
            if slot is None or slot.job is None:
                continue
            if kind is Deadline.KILL:
                self._kill(slot)
            elif kind is Deadline.TIMEOUT and slot.state is SlotState.RUNNING:
                ran = time.time() - slot.job.record.started_at
                self.request_stop(slot, slot.job.request.grace, f"timed out after {ran:.1f}s")

    # ---- reaping and ending -------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self._by_pid.pop(pid, None)
            if slot is None:
                # An init reaped before its "pid" line was read (claimed in _on_init), or
                # the zygote.
                self.unclaimed[pid] = status
            else:
                slot.init_status = status
                self._end_if_gone(slot)

    def _end_if_gone(self, slot: Slot) -> None:
        if slot.gone and slot.state is not SlotState.ENDED:
            self._end(slot)

    def _end(self, slot: Slot) -> None:
        ran = slot.state in JOB_STATES
        stopped = slot.state is SlotState.STOPPING
        starting = slot.state is SlotState.STARTING
        slot.move(SlotState.ENDED)
        if slot.job is None:
            self.pool.forget(slot)
        else:
            del self.jobs[slot.id]
        close_order(slot)
        if slot.job is not None and slot.job.log is not None:
            os.close(slot.job.log.fd)
        elif slot.log_fd is not None:
            os.close(slot.log_fd)
        stats = self._final_stats(slot) if ran else None
        try:
            slot.cgroup.destroy()
        except (OSError, WorkerError) as exc:  # retried at the next launcher start
            log.error("job %s: its cgroup could not be removed: %s", slot.id, exc)
        if stats is None:  # no job ran in it: its file is no job's log
            slot.path.unlink(missing_ok=True)
            if starting:  # its init died before exec without saying why (killed while warming)
                assert slot.job is not None
                failure = RequestFailed("the job's init died", StartStage.SETUP)
                self._channel.send_reply(slot.job.start_req, failure)
            return
        self._record_result(slot, stats, stopped)

    def _final_stats(self, slot: Slot) -> CgroupStats:
        try:
            return slot.cgroup.stats()
        except (OSError, WorkerError) as exc:
            log.error("job %s: no usage figures: %s", slot.id, exc)
            return CgroupStats(cpu_seconds=0.0, peak_memory_bytes=0, oom_killed=False)

    def _record_result(self, slot: Slot, stats: CgroupStats, stopped: bool) -> None:
        job = slot.job
        assert job is not None and job.log is not None
        wait_status = slot.job_status if slot.job_status is not None else slot.init_status
        assert wait_status is not None  # a job that ran had an init, and it has been reaped
        result = ended_result(
            wait_status,
            stats,
            stop_reason=job.stop_reason if stopped else None,
            output_size=job.log.size,
            output_truncated=job.log.truncated,
        )
        try:
            write_result(slot.path, job.record, result)
        except OSError as exc:  # a full disk: the connected server still gets the result
            log.error("job %s: could not record its result: %s", slot.id, exc)
        self.announce_sizes()
        self._channel.send_event(JobExited(slot.id, result))
        for req in job.stop_waiters:
            self._channel.send_reply(req, StopReply())

    def _close_fd(self, fd: int) -> None:
        self._sel.unregister(fd)
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
