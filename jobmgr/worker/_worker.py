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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import (
    CapacityError,
    InvalidSpec,
    JobNotFound,
    LaunchError,
    WorkerError,
    WorkerUnavailable,
)
from ._launcher_client import LauncherClient
from ._outputlog import OutputLog
from ._protocol import Message
from ._records import log_path, logged_jobs, read_record
from ._spec import DEFAULT_ENV, DEFAULT_LIMITS, JobSpec, Limits
from ._statedir import make_private
from ._status import JobState, JobStatus, OutputChunk
from ._store import JobStore
from .cgroups import CgroupDriver, detect_driver

_REPLY_TIMEOUT = 60.0
GiB = 1024**3


@dataclass
class _Entry:
    status: JobStatus
    log: OutputLog


@dataclass(frozen=True)
class Retention:
    """Which finished jobs (and their output) to keep: at most ``count``, none older than
    ``max_age`` seconds (after they ended). None keeps everything."""

    count: int | None = None
    max_age: float | None = None


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
    default_run_as:  user jobs run as unless they ask; None runs them as the worker's user.
    allowed_run_as:  users a job may ask to run as; None allows any.
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
        retention: Retention = Retention(),
        default_run_as: str | None = None,
        allowed_run_as: Collection[str] | None = None,
    ) -> None:
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
        self._retention = retention
        self._default_run_as = default_run_as
        self._allowed_run_as = None if allowed_run_as is None else set(allowed_run_as)
        self._jobs: dict[str, _Entry] = {}
        # Kept in step with _jobs by _track, so that a Start or an exit costs the same with
        # 100 000 jobs known as with ten.
        self._running: set[str] = set()
        self._ended: dict[str, float] = {}  # finished job -> ended_at, oldest first
        self._lock = threading.Lock()
        self._closed = False
        self._starting = 0
        try:
            self._driver: CgroupDriver = detect_driver(cgroup_parent)
            self._store = JobStore(self._state / "jobs.db")
            self._load_history()
            self._launcher, hello = self._connect(cgroup_parent, warm_slots)
            self._adopt(hello)
            self._prune()
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
            _checked(fut.result(self._stop_timeout(grace)))
        return self.status(job_id)

    async def astop(self, job_id: str, grace: float | None = None) -> JobStatus:
        """Asyncio form of stop."""
        fut = self._submit_stop(job_id, grace)
        if fut is not None:
            reply = await asyncio.wait_for(asyncio.wrap_future(fut), self._stop_timeout(grace))
            _checked(reply)
        return self.status(job_id)

    def status(self, job_id: str) -> JobStatus:
        """The job's current status; CPU and memory figures are live while it runs."""
        status = self._entry(job_id).status
        if status.state is JobState.RUNNING:
            try:
                stats = self._driver.open(job_id).stats()
            except (OSError, WorkerError):
                return self._entry(job_id).status  # it just ended; final figures are in
            status = dataclasses.replace(
                status, cpu_seconds=stats.cpu_seconds, peak_memory_bytes=stats.peak_memory_bytes
            )
        return status

    async def astatus(self, job_id: str) -> JobStatus:
        """Asyncio form of status (reads a few small cgroup files)."""
        return self.status(job_id)

    def list(self) -> list[JobStatus]:
        """Every job known, oldest first."""
        with self._lock:
            entries = list(self._jobs.values())
        return sorted((e.status for e in entries), key=lambda s: s.started_at)

    def output(
        self, job_id: str, *, follow: bool = True, tail: int | None = None
    ) -> Iterator[OutputChunk]:
        """The job's output from byte 0 (or its last ``tail`` lines); with ``follow``, live
        until the job has ended."""
        return self._entry(job_id).log.follow(follow=follow, tail=_check_tail(tail))

    def aoutput(
        self, job_id: str, *, follow: bool = True, tail: int | None = None
    ) -> AsyncIterator[OutputChunk]:
        """Asyncio form of output."""
        return self._entry(job_id).log.afollow(follow=follow, tail=_check_tail(tail))

    def close(self) -> None:
        """Stop every running job (with the default grace) and shut the launcher down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            fut = self._launcher.request({"op": "shutdown", "grace": self._default_grace})
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

    def _connect(self, cgroup_parent: str, warm_slots: int) -> tuple[LauncherClient, Message]:
        """Reach the state dir's launcher, starting one if none runs.

        A launcher killed a moment ago may still accept a connection and then drop it; the
        next attempt finds its socket refused and starts a new one.
        """
        for attempt in range(3):
            client = LauncherClient(self._state, cgroup_parent, warm_slots, self._on_event)
            try:
                return client, client.request({"op": "hello"}).result(_REPLY_TIMEOUT)
            except WorkerUnavailable:
                client.close()
                if attempt == 2:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    # ---- requests ---------------------------------------------------------------------------

    def _submit_start(self, spec: JobSpec) -> Future[Message]:
        limits = spec.limits.merged_over(self._default_limits)
        if self._max_limits is not None:
            limits.check_within(self._max_limits)
        uid, gid = self._resolve_user(spec.run_as or self._default_run_as)
        with self._lock:
            if self._closed:
                raise WorkerUnavailable("the worker is closed: the server is shutting down")
            running = self._starting + len(self._running)
            if self._max_running is not None and running >= self._max_running:
                raise CapacityError(
                    f"{running} jobs are running, the server's limit; stop one or wait"
                )
            self._starting += 1
        message = {
            "op": "start",
            "argv": list(spec.argv),
            "owner": spec.owner,
            "limits": dataclasses.asdict(limits),
            "env": dict(spec.env) if spec.env is not None else dict(DEFAULT_ENV),
            "cwd": spec.cwd,
            "uid": uid,
            "gid": gid,
            "timeout": spec.timeout,
            "grace": self._default_grace,
            "output_cap": self._output_cap,
        }

        def register(reply: Message) -> None:
            # On the event thread, before any output or exit event of the new job.
            with self._lock:
                self._starting -= 1
            if not reply.get("ok"):
                return
            job_id = str(reply["id"])
            status = JobStatus(
                id=job_id,
                argv=tuple(spec.argv),
                owner=spec.owner,
                limits=limits,
                state=JobState.RUNNING,
                started_at=float(reply["started_at"]),
            )
            log = OutputLog(log_path(self._jobs_dir, job_id))
            with self._lock:
                self._jobs[job_id] = _Entry(status, log)
                self._track(status)
            self._store.save(status)

        try:
            return self._launcher.request(message, on_reply=register)
        except BaseException:
            with self._lock:
                self._starting -= 1
            raise

    def _resolve_user(self, user: str | None) -> tuple[int | None, int | None]:
        if user is None:
            return None, None
        if self._allowed_run_as is not None and user not in self._allowed_run_as:
            allowed = ", ".join(sorted(self._allowed_run_as)) or "none"
            raise InvalidSpec(f"jobs may not run as {user!r} here (allowed: {allowed})")
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError):
            raise InvalidSpec(f"no such user: {user!r}") from None
        return entry.pw_uid, entry.pw_gid

    def _submit_stop(self, job_id: str, grace: float | None) -> Future[Message] | None:
        if grace is not None and not 0 <= grace <= 86400:
            raise InvalidSpec(f"grace must be between 0 and 86400 seconds, got {grace}")
        entry = self._entry(job_id)
        if entry.status.terminated:
            return None
        grace = self._default_grace if grace is None else grace
        return self._launcher.request({"op": "stop", "id": job_id, "grace": grace})

    def _stop_timeout(self, grace: float | None) -> float:
        return (self._default_grace if grace is None else grace) + _REPLY_TIMEOUT

    def _entry(self, job_id: str) -> _Entry:
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None:
            raise JobNotFound(job_id)
        return entry

    # ---- events from the launcher -------------------------------------------------------------

    def _on_event(self, message: Message) -> None:
        kind = message.get("ev")
        if kind == "output":
            with self._lock:
                entry = self._jobs.get(message["id"])
            if entry is not None:
                entry.log.advance(int(message["size"]))
        elif kind == "truncated":
            self._update(message["id"], output_truncated=True)
        elif kind == "exit":
            self._record_exit(message["id"], message["result"])
            self._prune()
        elif kind == "disconnected":
            with self._lock:
                entries = list(self._jobs.values())
            for entry in entries:  # wake followers: nothing more can arrive through us
                entry.log.advance(entry.log.size, done=True)

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                return
            entry.status = dataclasses.replace(entry.status, **changes)
            self._track(entry.status)
        self._store.save(entry.status)

    def _record_exit(self, job_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                return
            entry.status = _apply_result(entry.status, result)
            self._track(entry.status)
        self._store.save(entry.status)
        entry.log.advance(int(result["output_size"]), done=True)

    def _prune(self) -> None:
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
                self._jobs.pop(oldest, None)
                doomed.append(oldest)
        if doomed:
            self._store.delete(doomed)
            for job_id in doomed:
                log_path(self._jobs_dir, job_id).unlink(missing_ok=True)

    def _track(self, status: JobStatus) -> None:
        """Note a job's new status in the running set and the order of ends (lock held)."""
        if not status.terminated:
            self._running.add(status.id)
        elif status.id not in self._ended:
            self._running.discard(status.id)
            self._ended[status.id] = _ended_at(status)

    # ---- history ------------------------------------------------------------------------------

    def _load_history(self) -> None:
        """Jobs from the database, plus what the launcher recorded while no server was here."""
        known = {status.id: status for status in self._store.load()}
        for job_id in logged_jobs(self._jobs_dir):
            entry = self._load_job(job_id, known.get(job_id))
            if entry is not None:
                self._jobs[job_id] = entry
        for status in sorted((e.status for e in self._jobs.values()), key=_ended_at):
            self._track(status)
        for job_id in set(known) - set(self._jobs):
            self._store.delete([job_id])  # its log is gone: pruned by hand

    def _load_job(self, job_id: str, status: JobStatus | None) -> _Entry | None:
        """A job from its database row and its log's record frame, whichever knows more."""
        path = log_path(self._jobs_dir, job_id)
        if status is None or status.state is JobState.RUNNING:
            record = read_record(path)
            if record is None:
                return None  # a start that never got as far as its record
            job, result = record
            status = status or _status_from_record(job)
            if result is not None:
                status = _apply_result(status, result)
            self._store.save(status)
        log = OutputLog(path)
        if status.terminated:
            log.advance(_file_size(path), done=True)
        return _Entry(status, log)

    def _adopt(self, hello: Message) -> None:
        """Take the running jobs (with their output sizes) from the launcher's hello; a job
        the launcher does not know is lost."""
        running = {job["id"]: int(job["size"]) for job in hello.get("running", [])}
        for job_id in running.keys() - self._jobs.keys():
            # Started on the request of a server that died before the reply, after
            # _load_history looked: the launcher wrote its record before answering hello.
            entry = self._load_job(job_id, None)
            if entry is None:
                continue
            with self._lock:
                self._jobs[job_id] = entry
                self._track(entry.status)
            # Its exit may have been announced before it was in the table; the record has it.
            self._exit_if_recorded(entry)
        with self._lock:
            entries = [self._jobs[job_id] for job_id in self._running]
        for entry in entries:
            job_id = entry.status.id
            if job_id in running:
                entry.log.advance(running[job_id])
                continue
            if self._exit_if_recorded(entry):
                continue
            self._update(
                job_id,
                state=JobState.LOST,
                ended_at=time.time(),
                reason="the launcher has no record of it",
            )
            entry.log.advance(_file_size(entry.log.path), done=True)

    def _exit_if_recorded(self, entry: _Entry) -> bool:
        """Take the job's result from its log's record, if the launcher wrote one there."""
        record = read_record(entry.log.path)
        if record is None or record[1] is None:
            return False
        self._record_exit(entry.status.id, record[1])
        return True


def _started(reply: Message) -> str:
    if not reply.get("ok"):
        error = str(reply.get("error", "unknown error"))
        stage = reply.get("stage")
        if stage in ("exec", "cwd", "user"):
            raise LaunchError(error)
        if stage == "limits":
            raise InvalidSpec(error)
        if stage == "space":
            raise CapacityError(error)
        raise WorkerError(f"starting the job failed: {error}")
    return str(reply["id"])


def _checked(reply: Message) -> None:
    if not reply.get("ok"):
        raise WorkerError(str(reply.get("error", "unknown error")))


def _check_tail(tail: int | None) -> int | None:
    if tail is not None and tail < 0:
        raise InvalidSpec(f"tail must be >= 0 lines, got {tail}")
    return tail


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _ended_at(status: JobStatus) -> float:
    return status.ended_at or 0.0


def _status_from_record(record: dict[str, Any]) -> JobStatus:
    return JobStatus(
        id=record["id"],
        argv=tuple(record["argv"]),
        owner=record["owner"],
        limits=Limits(**record["limits"]),
        state=JobState.RUNNING,
        started_at=record["started_at"],
    )


def _apply_result(status: JobStatus, result: dict[str, Any]) -> JobStatus:
    return dataclasses.replace(
        status,
        state=JobState(result["state"]),
        ended_at=result["ended_at"],
        exit_code=result["exit_code"],
        signal=result["signal"],
        oom_killed=result["oom_killed"],
        cpu_seconds=result["cpu_seconds"],
        peak_memory_bytes=result["peak_memory_bytes"],
        reason=result.get("reason", ""),
        output_truncated=result.get("output_truncated", False),
    )
