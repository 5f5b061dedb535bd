"""Supervision: every slot's pipes and init, and every job from its start to its result.

The launcher holds the read ends of each job's stdout and stderr and appends them to the
job's log (see _capture), and a pidfd of each init (see _pidfd): it signals the init only
through it (see _stopping) and learns of its exit when it becomes readable. A job's output and
exit status are therefore kept while no server is connected. A job ends once its pipes are
closed and its init has exited: then its cgroup's figures are read, the cgroup removed, and
the result written into its record frame and sent.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from collections.abc import Callable
from pathlib import Path

from ._adopt import CannotAdopt, adopted_slot, handles_of
from ._capture import read_some
from ._channel import ServerChannel
from ._errors import WorkerError
from ._fdpass import close_all
from ._host_sockets import HostSockets, masks_for
from ._pidfd import ProcessHandle, reap_strays
from ._pool import WarmPool, close_order
from ._records import write_result
from ._shim import (
    AdoptReply,
    InitExited,
    InitFailed,
    InitPid,
    InitReady,
    InitReport,
    InitStarted,
    JobExited,
    JobHandles,
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
from ._starting import prepare, refuse_if_past, send_order
from ._status import JobState
from ._stopping import Stopping, final_stats, job_result
from .cgroups import CgroupDriver, CgroupStats, detect_driver

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
        self._driver = driver
        self._sel = sel
        self._channel = channel
        self._stopping = Stopping()
        self._sizes_to_announce: dict[str, int] = {}
        self._shutdown_grace: float | None = None  # set once shutting down: no more starts
        self._host_sockets = HostSockets()
        self.pool = WarmPool(state_dir, driver, spares, self._watch, self._watch_zygote)

    @property
    def idle(self) -> bool:
        """True once no slot is left, spare or job."""
        return not self.jobs and not self.pool.spares

    def running(self) -> tuple[RunningJob, ...]:
        """The jobs the server should know, with their committed sizes (0 while starting)."""
        return tuple(
            RunningJob(
                slot.id,
                slot.size if slot.state in JOB_STATES else 0,
                slot.job.record if slot.job is not None else None,
            )
            for slot in self.jobs.values()
            if slot.state in JOB_STATES or slot.state is SlotState.STARTING
        )

    def next_deadline_in(self) -> float | None:
        return self._stopping.next_in()

    # ---- starting -----------------------------------------------------------------------

    def start(self, req: int, request: StartRequest) -> None:
        """Give a spare the job: its limits, its record, then its order. The reply goes out
        when the init reports the command started (or why not)."""
        if self._shutdown_grace is not None:
            raise StartRefused(StartStage.SHUTDOWN, "the job launcher is shutting down")
        refuse_if_past(request)
        slot = self.pool.take()
        settings = self.pool.settings
        assert settings is not None  # a slot was made, so the pool was told how
        self.jobs[slot.id] = slot
        slot.move(SlotState.STARTING)
        uid = slot.uid if request.uid is None or request.root else request.uid
        record = request.record(slot.id, time.time(), uid, self._driver.parent)
        slot.job = Job(request, req, record)
        try:
            prepare(slot, slot.job, self._jobs_dir, lambda why: self._truncated(slot, why))
            masks = masks_for(self._host_sockets.paths(), settings.hidden, request.rootfs)
            refuse_if_past(request)  # making its record may have taken a while
        except BaseException:
            slot.move(SlotState.DISCARDED)
            close_order(slot)
            raise
        send_order(slot, encode_order(request, slot.uid, masks, settings))
        close_order(slot)
        if request.timeout:
            self._stopping.time_out(slot, request.timeout)

    def _started_if_ready(self, slot: Slot) -> None:
        """The job runs once its init said so and its pidfd is held, in either order."""
        if slot.state is not SlotState.STARTING or not slot.started or slot.init is None:
            return
        assert slot.job is not None
        slot.move(SlotState.RUNNING)
        self.pool.started()
        reply = StartReply(slot.id, slot.job.record.started_at)
        self._channel.send_reply(slot.job.start_req, reply)
        self.send_handles(slot)  # after the reply, which it would only delay
        if slot.job.log is not None and slot.job.log.truncated:  # held back while starting
            self._channel.send_event(OutputTruncated(slot.id, slot.job.log.truncated_why))
        if self._shutdown_grace is not None:  # a start already under way when shutdown came
            self._stopping.request(slot, self._shutdown_grace, "stopped at server shutdown")

    def send_handles(self, slot: Slot) -> None:
        """Send the server copies of a running job's handles (see JobHandles). Out of
        descriptors, none are sent: the job runs on, but would not outlive this launcher."""
        try:
            self._channel.send_event(*handles_of(slot))
        except OSError as exc:
            log.error("job %s: no copies of its handles for the server: %s", slot.id, exc)

    def adopt(self, req: int, handles: JobHandles, fds: list[int], new: bool) -> None:
        """Take over a job a dead launcher ran (see _adopt), unless this launcher runs it
        already; only if ``new`` may it be one this launcher did not run. The answer says if
        it could."""
        if handles.id in self.jobs or not new:
            close_all(fds)
            slot = self.jobs.get(handles.id)
            answer = AdoptReply(slot.size) if slot else RequestFailed("it is not running here")
            self._channel.send_reply(req, answer)
            return
        try:
            slot = adopted_slot(handles, fds, self._jobs_dir, self._driver_of, self._truncated)
        except (CannotAdopt, OSError, ValueError) as exc:
            close_all(fds)
            log.error("job %s: cannot be taken over: %s", handles.id, exc)
            self._channel.send_reply(req, RequestFailed(f"job {handles.id}: {exc}"))
            return
        self.jobs[slot.id] = slot
        self._watch(slot)
        init = slot.init
        assert init is not None and slot.job is not None
        self._sel.register(init.fd, selectors.EVENT_READ, lambda _: self._on_init_exit(slot))
        timeout = slot.job.request.timeout
        if timeout:
            left = slot.job.record.started_at + timeout - time.time()
            self._stopping.time_out(slot, max(0.0, left))
        log.info("job %s: taken over from a dead launcher, its log at %d bytes", slot.id, slot.size)
        self._channel.send_reply(req, AdoptReply(slot.size))

    def _driver_of(self, parent: str) -> CgroupDriver:
        return self._driver if parent in ("", self._driver.parent) else detect_driver(parent)

    def _start_failed(self, slot: Slot, failure: RequestFailed) -> None:
        assert slot.job is not None
        slot.move(SlotState.DISCARDED)
        self._channel.send_reply(slot.job.start_req, failure)

    # ---- the init's reports and the job's output ----------------------------------------

    def _watch(self, slot: Slot) -> None:
        for fd in slot.pipes:
            self._sel.register(fd, selectors.EVENT_READ, self._pipe_handler(slot, fd))
        if slot.report_fd is not None:
            on_report = lambda _: self._on_report(slot)  # noqa: E731
            self._sel.register(slot.report_fd, selectors.EVENT_READ, on_report)

    def _watch_zygote(self, zygote: ProcessHandle) -> None:
        self._sel.register(zygote.fd, selectors.EVENT_READ, lambda _: self._on_zygote_exit())

    def _on_zygote_exit(self) -> None:
        zygote = self.pool.zygote
        self._sel.unregister(zygote.fd)
        zygote.collect()
        self.pool.zygote_ended()
        if self.pool.zygote is not zygote:
            self._watch_zygote(self.pool.zygote)

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
            case InitPid(pid=pid, cloned=cloned):
                self.pool.placed(cloned)
                self._hold_init(slot, pid)
            case InitReady() if slot.state is SlotState.WARMING:
                slot.move(SlotState.READY)
            case InitReady():
                pass  # a start took it while it warmed
            case InitStarted():
                slot.started = True
                self._started_if_ready(slot)
            case InitFailed(stage=stage, message=message) if slot.job is None:
                self.pool.failed_to_warm(slot, f"{stage.value} {message}")
            case InitFailed(stage=stage, message=message) if slot.state is SlotState.STARTING:
                self._start_failed(slot, RequestFailed(message, stage))
            case InitFailed():
                pass  # a start refused already: the init's own failure adds nothing
            case InitExited():
                slot.exit_report = report

    def _hold_init(self, slot: Slot, pid: int) -> None:
        # Safe by the invariant in _pidfd: only a pidfd reaps, and none was held of it yet.
        slot.release_pidfd_room()
        try:
            slot.init = ProcessHandle.of_child(pid)
        except OSError as exc:  # cannot happen while the invariant holds: say so loudly
            log.error("slot %s: no pidfd of its init (pid %d): %s", slot.id, pid, exc)
            return
        init = slot.init
        self._sel.register(init.fd, selectors.EVENT_READ, lambda _: self._on_init_exit(slot))
        self._started_if_ready(slot)

    def _on_init_exit(self, slot: Slot) -> None:
        assert slot.init is not None
        self._sel.unregister(slot.init.fd)
        slot.init.collect()
        self._end_if_gone(slot)

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
            # The pipe stays readable, so carrying on as before would spin this loop on the
            # same error. Keep nothing more and only drain it; should even that fail, close it
            # (the worker's copy keeps it open, so then the job may block writing).
            log.exception("job %s: reading its output failed", slot.id)
            if writer is not None and not writer.truncated:
                writer.give_up(f"reading the job's output failed: {exc}")
                more = None
            else:
                more = False
        if more is False:
            self._close_fd(fd)
            del slot.pipes[fd]
            self._end_if_gone(slot)
        elif more:
            self._sizes_to_announce[slot.id] = slot.size

    def _truncated(self, slot: Slot, reason: str) -> None:
        # The server learns of a job from its start reply: news before it is sent after it.
        log.warning("job %s: output truncated: %s", slot.id, reason)
        if slot.state is not SlotState.STARTING:
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
        self._stopping.request(slot, grace, "stopped on request")

    def begin_shutdown(self, grace: float) -> None:
        """Stop every job, refuse new starts, and stop those under way once they run."""
        self._shutdown_grace = grace
        for slot in list(self.jobs.values()):
            if slot.state in JOB_STATES:
                self._stopping.request(slot, grace, "stopped at server shutdown")
        self.pool.close()

    def fire_deadlines(self) -> None:
        self._stopping.fire(self.jobs)

    # ---- ending -------------------------------------------------------------------------

    def reap_strays(self) -> None:
        """Reap a child no pidfd covers (see _pidfd.reap_strays)."""
        known = {self.pool.zygote.pid}
        for slot in (*self.jobs.values(), *self.pool.spares.values()):
            if slot.init is not None:
                known.add(slot.init.pid)
        reap_strays(known)

    def _end_if_gone(self, slot: Slot) -> None:
        if slot.gone and slot.state is not SlotState.ENDED:
            self._end(slot)

    def _end(self, slot: Slot) -> None:
        ran = slot.state in JOB_STATES
        starting = slot.state is SlotState.STARTING
        slot.move(SlotState.ENDED)
        if slot.job is None:
            self.pool.forget(slot)
        else:
            del self.jobs[slot.id]
        close_order(slot)
        slot.release_pidfd_room()
        if slot.init is not None:
            slot.init.close()
        if slot.job is not None and slot.job.log is not None:
            os.close(slot.job.log.fd)
        elif slot.log_fd is not None:
            os.close(slot.log_fd)
        stats = final_stats(slot) if ran else None
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
        self._record_result(slot, stats)

    def _record_result(self, slot: Slot, stats: CgroupStats) -> None:
        job = slot.job
        assert job is not None
        result = job_result(slot, stats)
        try:
            if write_result(slot.path, job.record, result, job.record_size):
                log.error("job %s: its record frame was damaged; rewritten in full", slot.id)
        except OSError as exc:  # a full disk: the connected server still gets the result
            log.error("job %s: could not record its result: %s", slot.id, exc)
        self.announce_sizes()
        self._channel.send_event(JobExited(slot.id, result))
        reply = StopReply(already_ended=result.state is not JobState.STOPPED)
        for req in job.stop_waiters:
            self._channel.send_reply(req, reply)

    def _close_fd(self, fd: int) -> None:
        self._sel.unregister(fd)
        os.close(fd)
