"""Worker: the library's front door. Keeps the job table; the launcher does the kernel work."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import CapacityError, InvalidSpec, JobNotFound, LaunchError, WorkerError
from ._launcher_client import LauncherClient
from ._outputlog import OutputLog
from ._protocol import Message
from ._spec import DEFAULT_ENV, DEFAULT_LIMITS, JobSpec, Limits
from ._status import JobState, JobStatus, OutputChunk
from .cgroups import CgroupDriver, detect_driver

_REPLY_TIMEOUT = 60.0


@dataclass
class _Entry:
    status: JobStatus
    log: OutputLog


class Worker:
    """Starts, stops, queries and follows jobs kept under ``state_dir``.

    state_dir:       where job records and output live (created 0700); one server at a time.
    cgroup_parent:   the cgroup under which every job gets its own (e.g. ``jobmgr``).
    default_limits:  applied to every limit a JobSpec leaves unset.
    default_grace:   seconds between SIGTERM and SIGKILL when stopping.
    max_running:     refuse new jobs (CapacityError) while this many run; None for no cap.
    warm_slots:      jobs' namespaces and cgroups kept made ahead of time, so starts are fast.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        cgroup_parent: str = "jobmgr",
        default_limits: Limits = DEFAULT_LIMITS,
        default_grace: float = 5.0,
        max_running: int | None = None,
        warm_slots: int = 2,
    ) -> None:
        self._state = Path(state_dir).resolve()
        self._state.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self._state / "jobs").mkdir(mode=0o700, exist_ok=True)
        self._lock_fd = os.open(self._state / "worker.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WorkerError(f"{self._state} is in use by another jobmgr server") from None
        self._default_limits = default_limits
        self._default_grace = default_grace
        self._max_running = max_running
        self._jobs: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._starting = 0
        try:
            self._driver: CgroupDriver = detect_driver(cgroup_parent)
            self._load_history()
            self._launcher = LauncherClient(self._state, cgroup_parent, warm_slots, self._on_event)
            self._adopt(self._launcher.request({"op": "hello"}).result(_REPLY_TIMEOUT))
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---- the public face ----------------------------------------------------------------------

    def start(self, spec: JobSpec) -> str:
        """Start a job; returns its id once its command has been exec'd.

        Raises LaunchError if the command cannot be executed, InvalidSpec if the spec is bad,
        CapacityError if too many jobs are running.
        """
        return self._started(self._submit_start(spec).result(_REPLY_TIMEOUT))

    async def astart(self, spec: JobSpec) -> str:
        """Asyncio form of start."""
        return self._started(await asyncio.wrap_future(self._submit_start(spec)))

    def stop(self, job_id: str, grace: float | None = None) -> JobStatus:
        """SIGTERM every process of the job, SIGKILL what is left after ``grace`` seconds.

        Returns the final status once nothing of the job is alive. A finished job is
        returned as it is.
        """
        fut = self._submit_stop(job_id, grace)
        if fut is not None:
            self._checked(fut.result(self._stop_timeout(grace)))
        return self.status(job_id)

    async def astop(self, job_id: str, grace: float | None = None) -> JobStatus:
        """Asyncio form of stop."""
        fut = self._submit_stop(job_id, grace)
        if fut is not None:
            self._checked(
                await asyncio.wait_for(asyncio.wrap_future(fut), self._stop_timeout(grace))
            )
        return self.status(job_id)

    def status(self, job_id: str) -> JobStatus:
        """The job's current status; CPU and memory figures are live while it runs."""
        entry = self._entry(job_id)
        status = entry.status
        if status.state is JobState.RUNNING:
            try:
                stats = self._driver.open(job_id).stats()
            except OSError:
                return entry.status  # it just ended; the final figures are on their way
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

    def output(self, job_id: str, *, follow: bool = True) -> Iterator[OutputChunk]:
        """The job's output from byte 0; with ``follow``, live until the job has ended."""
        return self._entry(job_id).log.follow(follow=follow)

    def aoutput(self, job_id: str, *, follow: bool = True) -> AsyncIterator[OutputChunk]:
        """Asyncio form of output."""
        return self._entry(job_id).log.afollow(follow=follow)

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
            os.close(self._lock_fd)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ---------------------------------------------------------------------------

    def _submit_start(self, spec: JobSpec) -> Future[Message]:
        limits = spec.limits.merged_over(self._default_limits)
        with self._lock:
            if self._closed:
                raise WorkerError("the worker is closed")
            running = self._starting + sum(
                1 for e in self._jobs.values() if e.status.state is JobState.RUNNING
            )
            if self._max_running is not None and running >= self._max_running:
                raise CapacityError(
                    f"{running} jobs are running, the server's limit; stop one or wait"
                )
            self._starting += 1
        env = dict(spec.env) if spec.env is not None else dict(DEFAULT_ENV)
        message = {
            "op": "start",
            "argv": list(spec.argv),
            "owner": spec.owner,
            "limits": dataclasses.asdict(limits),
            "env": env,
            "cwd": spec.cwd,
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
                log = OutputLog(self._state / "jobs" / job_id / "output.log")
                self._jobs[job_id] = _Entry(status, log)

        try:
            return self._launcher.request(message, on_reply=register)
        except BaseException:
            with self._lock:
                self._starting -= 1
            raise

    def _started(self, reply: Message) -> str:
        if not reply.get("ok"):
            error = str(reply.get("error", "unknown error"))
            if reply.get("stage") in ("exec", "cwd", "user"):
                raise LaunchError(error)
            raise WorkerError(f"starting the job failed: {error}")
        return str(reply["id"])

    def _submit_stop(self, job_id: str, grace: float | None) -> Future[Message] | None:
        if grace is not None and grace < 0:
            raise InvalidSpec(f"grace must be >= 0 seconds, got {grace}")
        entry = self._entry(job_id)
        if entry.status.terminated:
            return None
        grace = self._default_grace if grace is None else grace
        return self._launcher.request({"op": "stop", "id": job_id, "grace": grace})

    def _stop_timeout(self, grace: float | None) -> float:
        return (self._default_grace if grace is None else grace) + _REPLY_TIMEOUT

    @staticmethod
    def _checked(reply: Message) -> None:
        if not reply.get("ok"):
            raise WorkerError(str(reply.get("error", "unknown error")))

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
        elif kind == "exit":
            self._record_exit(message["id"], message["result"])
        elif kind == "disconnected":
            with self._lock:
                entries = list(self._jobs.values())
            for entry in entries:  # wake followers: nothing more can arrive through us
                entry.log.advance(entry.log.size, done=True)

    def _record_exit(self, job_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                return
            entry.status = _apply_result(entry.status, result)
        entry.log.advance(int(result["output_size"]), done=True)

    # ---- history ------------------------------------------------------------------------------

    def _load_history(self) -> None:
        for job_dir in (self._state / "jobs").iterdir():
            try:
                record = json.loads((job_dir / "job.json").read_text())
            except (OSError, ValueError):
                continue
            status = JobStatus(
                id=record["id"],
                argv=tuple(record["argv"]),
                owner=record["owner"],
                limits=Limits(**record["limits"]),
                state=JobState.RUNNING,
                started_at=record["started_at"],
            )
            log = OutputLog(job_dir / "output.log")
            try:
                result = json.loads((job_dir / "result.json").read_text())
            except (OSError, ValueError):
                result = None
            if result is not None:
                status = _apply_result(status, result)
                log.advance(int(result["output_size"]), done=True)
            self._jobs[status.id] = _Entry(status, log)

    def _adopt(self, hello: Message) -> None:
        """Take the running jobs' output sizes; jobs that ended meanwhile are read from disk."""
        running = {job["id"]: int(job["size"]) for job in hello.get("running", [])}
        with self._lock:
            entries = [e for e in self._jobs.values() if e.status.state is JobState.RUNNING]
        for entry in entries:
            if entry.status.id in running:
                entry.log.advance(running[entry.status.id])
                continue
            try:
                result = json.loads((entry.log.path.parent / "result.json").read_text())
            except (OSError, ValueError):
                continue
            self._record_exit(entry.status.id, result)


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
    )
