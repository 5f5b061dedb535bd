"""Worker: the library's front door. Keeps the job table; the launcher does the kernel work."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import pwd
import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator
from concurrent.futures import Future
from pathlib import Path

from ._confinement import DEFAULT_SANDBOX, Sandbox, check_host, hidden
from ._errors import CapacityError, InvalidSpec, WorkerError, WorkerUnavailable
from ._history import adopt, load_history
from ._jobtable import KEEP_ALL, JobEntry, JobTable, Retention
from ._launcher_client import LauncherClient
from ._outputlog import OutputLog
from ._records import log_path
from ._shim import (
    ConnectionLost,
    Event,
    HelloReply,
    JobExited,
    OutputAdvanced,
    OutputTruncated,
    RequestFailed,
    ShutdownRequest,
    SlotSettings,
    StartReply,
    StartRequest,
    StopReply,
    StopRequest,
)
from ._spec import DEFAULT_ENV, DEFAULT_LIMITS, JobSpec, Limits
from ._statedir import make_private
from ._status import JobState, JobStatus, OutputChunk
from ._store import JobStore
from .cgroups import CgroupDriver, detect_driver

_REPLY_TIMEOUT = 60.0
GiB = 1024**3


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
        self._slots = SlotSettings(
            uid_first=sandbox.uid_range[0],
            uid_last=sandbox.uid_range[1],
            hidden=hidden((*sandbox.hidden_paths, str(self._state))),
            disk=int(default_limits.effective("disk_bytes") or 0),
            user_namespaces=sandbox.user_namespaces,
            binds=bool(sandbox.mount_sources or sandbox.rootfs_dirs),
        )
        self._lock = threading.Lock()  # guards _closed and _starting
        self._closed = False
        self._starting = 0
        try:
            self._driver: CgroupDriver = detect_driver(cgroup_parent)
            self._store = JobStore(self._state / "jobs.db")
            self._table = JobTable(self._store, self._jobs_dir, retention)
            load_history(self._table)
            self._launcher, hello = self._connect(cgroup_parent, warm_slots)
            adopt(self._table, hello.running)
            self._table.prune()
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

    def start(self, spec: JobSpec) -> str:
        """Start a job; returns its id once its command is running.

        Raises LaunchError if the command cannot be executed, InvalidSpec if the spec is bad
        or asks for more than the maxima, CapacityError if too many jobs are running.
        """
        return _started(self._submit_start(spec).result(_REPLY_TIMEOUT))

    async def astart(self, spec: JobSpec) -> str:
        """Asyncio form of start."""
        return _started(await asyncio.wrap_future(self._submit_start(spec)))

    def stop(self, job_id: str, grace: float | None = None) -> JobStatus:
        """SIGTERM every process of the job, SIGKILL what is left after ``grace`` seconds.

        Returns the final status once nothing of the job is alive. A finished job is
        returned as it is.
        """
        fut = self._submit_stop(job_id, grace)
        if fut is not None:
            _stopped(fut.result(self._stop_timeout(grace)))
        return self.status(job_id)

    async def astop(self, job_id: str, grace: float | None = None) -> JobStatus:
        """Asyncio form of stop."""
        fut = self._submit_stop(job_id, grace)
        if fut is not None:
            reply = await asyncio.wait_for(asyncio.wrap_future(fut), self._stop_timeout(grace))
            _stopped(reply)
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
        self, job_id: str, *, follow: bool = True, tail: int | None = None, offset: int = 0
    ) -> Iterator[OutputChunk]:
        """The job's output from byte ``offset`` (0: its first; see _outputlog for how output
        bytes are counted) or its last ``tail`` lines; with ``follow``, live until the job
        has ended. An offset past the output there is raises OffsetPastEnd as it is read."""
        tail, offset = _check_start(tail, offset)
        return self._table.get(job_id).log.follow(follow=follow, tail=tail, offset=offset)

    def aoutput(
        self, job_id: str, *, follow: bool = True, tail: int | None = None, offset: int = 0
    ) -> AsyncIterator[OutputChunk]:
        """Asyncio form of output."""
        tail, offset = _check_start(tail, offset)
        return self._table.get(job_id).log.afollow(follow=follow, tail=tail, offset=offset)

    def close(self) -> None:
        """Stop every running job (with the default grace) and shut the launcher down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            fut = self._launcher.request(ShutdownRequest(self._default_grace))
            fut.result(self._stop_timeout(None))
        except WorkerError:
            pass
        finally:
            self._launcher.close()
            if self._launcher.process is not None:
                self._launcher.process.wait(timeout=30)
            self._store.close()
            os.close(self._lock_fd)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self, cgroup_parent: str, warm_slots: int) -> tuple[LauncherClient, HelloReply]:
        """Reach the state dir's launcher, starting one if none runs.

        A launcher killed a moment ago may still accept a connection and then drop it; the
        next attempt finds its socket refused and starts a new one.
        """
        for attempt in range(3):
            client = LauncherClient(self._state, cgroup_parent, warm_slots, self._on_event)
            try:
                return client, client.hello(_REPLY_TIMEOUT, self._slots)
            except WorkerUnavailable:
                client.close()
                if attempt == 2:
                    raise
                time.sleep(0.2)
            except BaseException:
                client.close()
                raise
        raise AssertionError("unreachable")

    # ---- requests ---------------------------------------------------------------------------

    def _submit_start(self, spec: JobSpec) -> Future[StartReply | RequestFailed]:
        limits = spec.limits.merged_over(self._default_limits)
        if spec.limits.disk_bytes is None:
            limits = limits.disk_within_memory()
        if self._max_limits is not None:
            limits.check_within(self._max_limits)
        limits.check_disk_fits()
        uid, gid, root = self._resolve_user(spec.run_as or self._default_run_as)
        mounts = tuple(self._sandbox.check_mount(m, uid is not None) for m in spec.mounts)
        rootfs = None if spec.rootfs is None else self._sandbox.check_rootfs(spec.rootfs)
        with self._lock:
            if self._closed:
                raise WorkerUnavailable("the worker is closed: the server is shutting down")
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
        )

        def register(reply: StartReply | RequestFailed) -> None:
            # On the event thread, before any output or exit event of the new job.
            with self._lock:
                self._starting -= 1
            if isinstance(reply, RequestFailed):
                return
            status = request.record(reply.id, reply.started_at).status()
            self._table.add(JobEntry(status, OutputLog(log_path(self._jobs_dir, reply.id))))

        try:
            return self._launcher.request(request, on_reply=register)
        except BaseException:
            with self._lock:
                self._starting -= 1
            raise

    def _resolve_user(self, user: str | None) -> tuple[int | None, int | None, bool]:
        """(uid, gid, root) for ``user``: None, None for a uid of the job's own, and root True
        for root (of a user namespace of the job's own)."""
        if user is None:
            return None, None, False
        if self._allowed_run_as is not None and user not in self._allowed_run_as:
            allowed = ", ".join(sorted(self._allowed_run_as)) or "none"
            raise InvalidSpec(f"jobs may not run as {user!r} here (allowed: {allowed})")
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError):
            raise InvalidSpec(f"no such user: {user!r}") from None
        if entry.pw_uid == 0:
            return None, None, True
        return entry.pw_uid, entry.pw_gid, False

    def _submit_stop(
        self, job_id: str, grace: float | None
    ) -> Future[StopReply | RequestFailed] | None:
        if grace is not None and not 0 <= grace <= 86400:
            raise InvalidSpec(f"grace must be between 0 and 86400 seconds, got {grace}")
        entry = self._table.get(job_id)
        if entry.status.terminated:
            return None
        grace = self._default_grace if grace is None else grace
        return self._launcher.request(StopRequest(job_id, grace))

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
            case ConnectionLost():
                for entry in self._table.entries():  # wake followers: nothing more can come
                    entry.log.advance(entry.log.size, done=True)


def _started(reply: StartReply | RequestFailed) -> str:
    if isinstance(reply, RequestFailed):
        raise reply.start_error()
    return reply.id


def _stopped(reply: StopReply | RequestFailed) -> None:
    if isinstance(reply, RequestFailed):
        raise WorkerError(reply.error)


def _check_start(tail: int | None, offset: int) -> tuple[int | None, int]:
    if tail is not None and tail < 0:
        raise InvalidSpec(f"tail must be >= 0 lines, got {tail}")
    if offset < 0:
        raise InvalidSpec(f"offset must be >= 0 bytes, got {offset}")
    if tail is not None and offset:
        raise InvalidSpec("give tail or offset, not both: a tail starts where the last lines do")
    return tail, offset
