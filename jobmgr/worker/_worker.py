"""Worker: the library's front door. Keeps the job table; the launcher does the kernel work.

The launcher is kept by _keeper: while it is down (dead, frozen, being replaced) starts and
stops are refused with WorkerUnavailable, naming it; ``watch_availability`` tells the API
layer, whose health check follows it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Unpack

from ._confinement import DEFAULT_SANDBOX, Sandbox, check_host
from ._errors import CapacityError, InvalidSpec, WorkerError, WorkerUnavailable
from ._history import adopt, load_history
from ._jobtable import KEEP_ALL, JobEntry, JobTable, Retention
from ._keeper import LauncherKeeper
from ._launcher_client import LauncherClient
from ._outputlog import OutputLog, OutputStart, check_start
from ._records import log_path
from ._retries import RetriedStarts
from ._shim import (
    Event,
    HelloReply,
    JobExited,
    OutputAdvanced,
    OutputTruncated,
    RequestFailed,
    ShutdownRequest,
    StartReply,
    StartRequest,
    StopReply,
    StopRequest,
)
from ._spec import DEFAULT_ENV, DEFAULT_LIMITS, JobSpec, Limits, resolve_user
from ._statedir import make_private
from ._status import JobState, JobStatus, OutputChunk
from ._store import JobStore
from .cgroups import CgroupDriver, detect_driver

_REPLY_TIMEOUT = 60.0
GiB = 1024**3
log = logging.getLogger("jobmgr.worker")


class Worker:
    """Starts, stops, queries and follows jobs kept under ``state_dir``.

    state_dir:       job records (SQLite) and output live here (0700); one server at a time.
    cgroup_parent:   the cgroup under which every job gets its own (e.g. ``jobmgr``).
    default_limits:  applied to every limit a JobSpec leaves unset.
    max_limits:      requests above these are refused (InvalidSpec); None for no maximum.
    default_grace:   seconds between SIGTERM and SIGKILL when stopping.
    max_running:     refuse new jobs (CapacityError) while this many run; None for no cap.
    warm_slots:      jobs' namespaces and cgroups kept made ahead of time, so starts are fast.
    output_cap:      bytes of output kept per job; past it output is dropped, the job goes on.
    retention:       which finished jobs to keep.
    default_run_as:  user jobs run as unless they ask; None gives each job a uid of its own
                     (from ``sandbox.uid_range``). ``root`` runs a job as root of a user
                     namespace of its own, mapped to such a uid: never as the host's root.
    allowed_run_as:  users a job may ask to run as; None allows any.
    sandbox:         the rest of every job's confinement: hidden paths, uids, what it may
                     mount (see Sandbox). The state directory is always hidden from jobs.
    clone_into_cgroup: False places each job's init by writing cgroup.procs even where clone3
                     can place it (cgroup2, Linux 5.7+): to compare the two.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        cgroup_parent: str = "jobmgr",
        default_limits: Limits = DEFAULT_LIMITS,
        max_limits: Limits | None = None,
        default_grace: float = 5.0,
        max_running: int | None = None,
        warm_slots: int = 4,
        output_cap: int = GiB,
        retention: Retention = KEEP_ALL,
        default_run_as: str | None = None,
        allowed_run_as: Collection[str] | None = None,
        sandbox: Sandbox = DEFAULT_SANDBOX,
        clone_into_cgroup: bool = True,
    ) -> None:
        check_host(sandbox)
        self._state = Path(state_dir).resolve()
        make_private(self._state)
        self._jobs_dir = self._state / "jobs"
        self._jobs_dir.mkdir(mode=0o700, exist_ok=True)
        self._lock_fd = os.open(self._state / "worker.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WorkerError(f"{self._state} is in use by another jobmgr server") from None
        self._default_limits = default_limits
        self._max_limits = max_limits
        self._default_grace = default_grace
        self._max_running = max_running
        self._output_cap = output_cap
        self._default_run_as = default_run_as
        self._allowed_run_as = None if allowed_run_as is None else set(allowed_run_as)
        self._sandbox = sandbox
        slots = sandbox.slot_settings(self._state, default_limits, clone_into_cgroup)
        self._lock = threading.Lock()  # guards _closed, _starting and the run-as policy
        self._closed = False
        self._starting = 0
        self._availability: list[Callable[[bool], None]] = []
        try:
            self._driver: CgroupDriver = detect_driver(cgroup_parent)
            self._store = JobStore(self._state / "jobs.db")
            self._table = JobTable(self._store, self._jobs_dir, retention)
            self._retries = RetriedStarts(self._table)
            load_history(self._table)
            self._keeper = LauncherKeeper(
                self._state,
                cgroup_parent,
                warm_slots,
                slots,
                self._on_event,
                self._on_hello,
                self._on_availability,
            )
            self._keeper.connect()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---- the public face ----------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """Where job records and output are kept: private to the server's user (0700), so
        the server's own secrets may live there too."""
        return self._state

    def set_run_as(
        self, default_run_as: str | None, allowed_run_as: Collection[str] | None
    ) -> None:
        """Replace the run-as policy (see the class docstring) for the jobs started from now on;
        running jobs keep their user."""
        allowed = None if allowed_run_as is None else set(allowed_run_as)
        with self._lock:
            self._default_run_as, self._allowed_run_as = default_run_as, allowed

    def start(self, spec: JobSpec, *, deadline: float | None = None) -> str:
        """Start a job; returns its id once its command is running.

        Raises LaunchError if the command cannot be executed, InvalidSpec if the spec is bad
        or asks for more than the maxima, CapacityError if too many jobs are running,
        WorkerUnavailable while the launcher is down, DeadlineExceeded if ``deadline`` (a
        ``time.monotonic()`` time) passed before the job could be launched: it then was not.
        A spec with a request id that this owner used before gets that start's job.
        """
        return _started(self._submit_start(spec, deadline).result(_REPLY_TIMEOUT))

    async def astart(self, spec: JobSpec, *, deadline: float | None = None) -> str:
        """Asyncio form of start."""
        return _started(await asyncio.wrap_future(self._submit_start(spec, deadline)))

    def stop(self, job_id: str, grace: float | None = None) -> JobStatus:
        """SIGTERM every process of the job, SIGKILL what is left after ``grace`` seconds.

        Returns the final status once nothing of the job is alive: STOPPED, or, for a job that
        ended by itself before the stop reached it, how it ended (EXITED with its code). A
        finished job is returned as it is.
        """
        fut = self._submit_stop(job_id, grace)
        if fut is not None:
            _stopped(fut.result(self._stop_timeout(grace)))
        return self.status(job_id)

    async def astop(self, job_id: str, grace: float | None = None) -> JobStatus:
        """Asyncio form of stop."""
        fut = self._submit_stop(job_id, grace)
        if fut is not None:
            _stopped(await asyncio.wait_for(asyncio.wrap_future(fut), self._stop_timeout(grace)))
        return self.status(job_id)

    def status(self, job_id: str) -> JobStatus:
        """The job's current status; CPU and memory figures are live while it runs."""
        status = self._table.get(job_id).status
        if status.state is JobState.RUNNING:
            try:
                stats = self._driver.open(job_id).stats()
            except (OSError, WorkerError):
                return self._table.get(job_id).status  # it just ended; final figures are in
            status = dataclasses.replace(
                status, cpu_seconds=stats.cpu_seconds, peak_memory_bytes=stats.peak_memory_bytes
            )
        return status

    async def astatus(self, job_id: str) -> JobStatus:
        """Asyncio form of status (reads a few small cgroup files)."""
        return self.status(job_id)

    def list(self) -> list[JobStatus]:
        """Every job known, oldest first."""
        entries = self._table.entries()
        return sorted((e.status for e in entries), key=lambda s: s.started_at)

    def output(
        self, job_id: str, *, follow: bool = True, **start: Unpack[OutputStart]
    ) -> Iterator[OutputChunk]:
        """The job's output from byte ``offset`` (see _outputlog), its last ``tail`` lines or
        what was captured at or after ``since``; with ``follow``, live until the job has
        ended. An offset past the output there is raises OffsetPastEnd as it is read."""
        return self._table.get(job_id).log.follow(follow=follow, **check_start(start))

    def aoutput(
        self, job_id: str, *, follow: bool = True, **start: Unpack[OutputStart]
    ) -> AsyncIterator[OutputChunk]:
        """Asyncio form of output."""
        return self._table.get(job_id).log.afollow(follow=follow, **check_start(start))

    @property
    def available(self) -> bool:
        """Whether the launcher serves: False while it is down or being replaced."""
        return self._keeper.available

    def watch_availability(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback`` with ``available`` now and at every change (from a thread of
        the worker's: it must not block)."""
        with self._lock:
            self._availability.append(callback)
        callback(self._keeper.available)

    def close(self) -> None:
        """Stop every running job (with the default grace) and shut the launcher down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        launcher = self._keeper.close()
        try:
            if launcher is not None:
                fut = launcher.request(ShutdownRequest(self._default_grace))
                fut.result(self._stop_timeout(None))
        except WorkerError:
            pass
        finally:
            if launcher is not None:
                launcher.close()
                if launcher.process is not None:
                    launcher.process.wait(timeout=30)
            self._store.close()
            os.close(self._lock_fd)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _launcher(self) -> LauncherClient:
        """The current launcher connection (tests look at its process)."""
        client = self._keeper.client
        if client is None:
            raise WorkerUnavailable("the job launcher is not running")
        return client

    def _on_hello(self, reply: HelloReply) -> None:
        adopt(self._table, reply)
        self._table.prune()

    def _on_availability(self, available: bool) -> None:
        with self._lock:
            callbacks = list(self._availability)
        for callback in callbacks:
            try:
                callback(available)
            except Exception:
                log.exception("an availability callback failed")

    # ---- requests ---------------------------------------------------------------------------

    def _submit_start(
        self, spec: JobSpec, deadline: float | None
    ) -> Future[StartReply | RequestFailed]:
        limits = spec.limits.merged_over(self._default_limits)
        if spec.limits.disk_bytes is None:
            limits = limits.disk_within_memory()
        if self._max_limits is not None:
            limits.check_within(self._max_limits)
        limits.check_disk_fits()
        uid, gid, root = resolve_user(spec.run_as or self._default_run_as, self._allowed_run_as)
        mounts = tuple(self._sandbox.check_mount(m, uid is not None) for m in spec.mounts)
        rootfs = None if spec.rootfs is None else self._sandbox.check_rootfs(spec.rootfs)
        key = (spec.owner, spec.request_id)
        with self._lock:
            if self._closed:
                raise WorkerUnavailable("the worker is closed: the server is shutting down")
            if spec.request_id:
                again = self._retries.earlier(key)
                if again is not None:
                    return again
            running = self._starting + self._table.running_count()
            if self._max_running is not None and running >= self._max_running:
                raise CapacityError(
                    f"{running} jobs are running, the server's limit; stop one or wait"
                )
            self._starting += 1
        request = StartRequest(
            argv=tuple(spec.argv),
            owner=spec.owner,
            limits=limits,
            env=dict(spec.env) if spec.env is not None else dict(DEFAULT_ENV),
            cwd=spec.cwd,
            uid=uid,
            gid=gid,
            timeout=spec.timeout,
            grace=self._default_grace,
            output_cap=self._output_cap,
            root=root,
            mounts=mounts,
            rootfs=rootfs,
            request_id=spec.request_id,
            deadline=deadline,
        )

        def register(reply: StartReply | RequestFailed) -> None:
            # On the event thread, before any output or exit event of the new job. One step
            # under the lock: a start counted twice (or not at all) would misstate the cap.
            with self._lock:
                if not isinstance(reply, RequestFailed):
                    status = request.record(reply.id, reply.started_at).status()
                    output = OutputLog(log_path(self._jobs_dir, reply.id))
                    self._table.add(JobEntry(status, output))
                self._starting -= 1

        try:
            fut = self._keeper.request(request, on_reply=register)
        except BaseException:
            with self._lock:
                self._starting -= 1
            raise
        fut.add_done_callback(self._unanswered)
        if spec.request_id:
            self._retries.track(key, fut)
        return fut

    def _unanswered(self, fut: Future[StartReply | RequestFailed]) -> None:
        """A start that ended without a reply (its launcher died first) counts no more."""
        if fut.exception() is not None:
            with self._lock:
                self._starting -= 1

    def _submit_stop(
        self, job_id: str, grace: float | None
    ) -> Future[StopReply | RequestFailed] | None:
        if grace is not None and not 0 <= grace <= 86400:
            raise InvalidSpec(f"grace must be between 0 and 86400 seconds, got {grace}")
        entry = self._table.get(job_id)
        if entry.status.terminated:
            return None
        grace = self._default_grace if grace is None else grace
        return self._keeper.request(StopRequest(job_id, grace))

    def _stop_timeout(self, grace: float | None) -> float:
        return (self._default_grace if grace is None else grace) + _REPLY_TIMEOUT

    # ---- events from the launcher -------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        match event:
            case OutputAdvanced(id=job_id, size=size):
                entry = self._table.find(job_id)
                if entry is not None:
                    entry.log.advance(size)
            case OutputTruncated(id=job_id):
                self._table.update(job_id, output_truncated=True)
            case JobExited(id=job_id, result=result):
                self._table.record_exit(job_id, result)
                self._table.prune()


def _started(reply: StartReply | RequestFailed) -> str:
    if isinstance(reply, RequestFailed):
        raise reply.start_error()
    return reply.id


def _stopped(reply: StopReply | RequestFailed) -> None:
    if isinstance(reply, RequestFailed):
        raise WorkerError(reply.error)
