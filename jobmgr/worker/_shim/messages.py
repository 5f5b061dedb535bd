"""Every message the worker (in the server) and its launcher exchange, and what they mean.

Requests go from the worker to the launcher; each is answered once, by the reply its
``reply_type`` names or by RequestFailed (see stages). Events go from the launcher unasked.
A job's record and result travel in messages and also sit on disk, in the record frame at
the head of its log (see _records). Every field is part of the contract: a field added later
gets a default, so a reader that has it still reads a writer that does not (see codec).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from .._spec import UNLIMITED, Limits, Mount
from .._status import JobState, JobStatus

# Raised with every change a peer of the other version would misread.
PROTOCOL_VERSION = 4
SOCKET_NAME = "launcher.sock"  # in the state directory, 0600
LOCK_NAME = "launcher.lock"  # held (flock) by the one launcher of a state directory
READY = b"ready\n"  # the launcher's only line on stdout: it listens on SOCKET_NAME

ReplyT = TypeVar("ReplyT")


class Request(Generic[ReplyT]):
    """A request to the launcher, answered by a ``ReplyT`` when it succeeds."""

    def reply_type(self) -> type[ReplyT]:
        raise NotImplementedError


# ---- the job: its record and its result ---------------------------------------------------


@dataclass(frozen=True)
class JobRecord:
    """What the launcher records about a job as it starts (the record frame's "job")."""

    id: str
    argv: tuple[str, ...]
    owner: str
    limits: Limits
    env: Mapping[str, str]
    cwd: str | None
    started_at: float
    uid: int | None = None  # the host uid it runs as (a root job's namespace maps root to it)
    # Where its cgroup is (``<parent>/<id>``), so a launcher started later with another
    # parent still clears the right one.
    cgroup_parent: str = ""
    request_id: str = ""  # the client's id for its Start, so a retried Start finds it

    def status(self) -> JobStatus:
        """The job as it is while it runs."""
        return JobStatus(
            id=self.id,
            argv=self.argv,
            owner=self.owner,
            limits=self.limits,
            state=JobState.RUNNING,
            started_at=self.started_at,
            request_id=self.request_id,
        )


@dataclass(frozen=True)
class JobResult:
    """How a job ended and what it used: sent in JobExited and kept in its record frame."""

    state: JobState
    exit_code: int | None
    signal: int | None
    oom_killed: bool
    ended_at: float
    cpu_seconds: float
    peak_memory_bytes: int
    output_size: int  # bytes of its log committed, frames included
    output_truncated: bool = False
    reason: str = ""

    def applied_to(self, status: JobStatus) -> JobStatus:
        """``status`` as this result ends it."""
        return dataclasses.replace(
            status,
            state=self.state,
            ended_at=self.ended_at,
            exit_code=self.exit_code,
            signal=self.signal,
            oom_killed=self.oom_killed,
            cpu_seconds=self.cpu_seconds,
            peak_memory_bytes=self.peak_memory_bytes,
            reason=self.reason,
            output_truncated=self.output_truncated,
        )


# ---- replies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartReply:
    """Answers StartRequest once the command runs; the job's id is its slot's."""

    id: str
    started_at: float


@dataclass(frozen=True)
class StopReply:
    """Answers StopRequest once nothing of the job is alive; ``already_ended``: it had ended
    (or never ran) before the request came."""

    already_ended: bool = False


@dataclass(frozen=True)
class RunningJob:
    """A job the launcher supervises, how much of its log is committed, and its record (held
    in memory, so a job whose record frame on disk was damaged is still known)."""

    id: str
    size: int
    record: JobRecord | None = None


@dataclass(frozen=True)
class HelloReply:
    """Answers HelloRequest: the launcher's protocol version, the jobs it runs (starting ones
    with size 0), so a worker that (re)connects can adopt them, and the cgroup parent it was
    started for. A launcher's first answer also names the jobs it finished as LOST
    (``reclaimed``) and the logs whose record frame it found damaged (see _reclaim)."""

    version: int
    running: tuple[RunningJob, ...]
    cgroup_parent: str = ""
    reclaimed: tuple[str, ...] = ()
    damaged: tuple[DamagedLog, ...] = ()


@dataclass(frozen=True)
class DamagedLog:
    """A job's log whose record frame cannot be read, and what is wrong with it."""

    id: str
    reason: str


@dataclass(frozen=True)
class PingReply:
    """Answers PingRequest: the launcher's loop is turning."""


@dataclass(frozen=True)
class AdoptReply:
    """Answers AdoptRequest: the launcher supervises the job now; its log is committed up to
    ``size`` bytes."""

    size: int


@dataclass(frozen=True)
class ShutdownReply:
    """Answers ShutdownRequest once every job has ended; the launcher then exits."""


Reply = StartReply | StopReply | HelloReply | ShutdownReply | PingReply | AdoptReply


# ---- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRequest(Request[StartReply]):
    """Run ``argv`` in a warm slot: limits applied, record written, then the order sent.

    ``uid``/``gid`` None runs the job as the slot's own uid, or, with ``root``, as root of a
    user namespace mapped to it; a named user's ``uid``/``gid`` run it as that user (never
    root). ``grace`` is the SIGTERM-to-SIGKILL time when ``timeout`` stops it;
    ``output_cap`` bytes of output are kept at most (0: no cap). ``mounts`` and ``rootfs``
    have been checked against the worker's Sandbox and resolved on the host. ``request_id``
    is the client's id for this Start, kept in the record. ``deadline`` is when the caller
    stops waiting, on the host's CLOCK_MONOTONIC (``time.monotonic()``, the same in every
    process): a start that reaches the launcher past it is refused, never launched.
    """

    argv: tuple[str, ...]
    owner: str
    limits: Limits
    env: Mapping[str, str]
    cwd: str | None
    uid: int | None
    gid: int | None
    timeout: float | None
    grace: float
    output_cap: int
    root: bool = False
    mounts: tuple[Mount, ...] = ()
    rootfs: str | None = None
    request_id: str = ""
    deadline: float | None = None

    def reply_type(self) -> type[StartReply]:
        return StartReply

    def record(
        self, job_id: str, started_at: float, uid: int | None = None, cgroup_parent: str = ""
    ) -> JobRecord:
        """The record of the job this request starts (as host uid ``uid``, in a cgroup
        under ``cgroup_parent``)."""
        return JobRecord(
            id=job_id,
            argv=self.argv,
            owner=self.owner,
            limits=self.limits,
            env=self.env,
            cwd=self.cwd,
            started_at=started_at,
            uid=uid,
            cgroup_parent=cgroup_parent,
            request_id=self.request_id,
        )


@dataclass(frozen=True)
class StopRequest(Request[StopReply]):
    """SIGTERM every process of job ``id``, SIGKILL what is left after ``grace`` seconds."""

    id: str
    grace: float

    def reply_type(self) -> type[StopReply]:
        return StopReply


@dataclass(frozen=True)
class SlotSettings:
    """What every slot is made from, whatever job it gets (see _sandbox.c): the uids slots
    take theirs from, the host paths the view hides, the limits its cgroup and its private
    tmpfs are made with (the server's defaults: a start that keeps them writes no cgroup knob
    and resizes nothing), whether jobs may make user namespaces, and whether a start may bind
    host paths (else a slot lets go of its clone of the host's root while it warms)."""

    uid_first: int
    uid_last: int
    hidden: tuple[str, ...] = ()
    limits: Limits = UNLIMITED
    user_namespaces: bool = False
    binds: bool = False  # a start may bind host paths or ask for a root of its own
    clone_into_cgroup: bool = True  # False: every init joins its cgroup by cgroup.procs


@dataclass(frozen=True)
class HelloRequest(Request[HelloReply]):
    """The first request of a connection: who speaks which version, and what runs. The
    launcher makes slots only once a hello has said how (``slots``); a hello that says it
    otherwise lets the spares made before go. ``handles``: send the running jobs' JobHandles
    before the answer."""

    version: int
    slots: SlotSettings | None = None
    handles: bool = True

    def reply_type(self) -> type[HelloReply]:
        return HelloReply


@dataclass(frozen=True)
class PingRequest(Request[PingReply]):
    """Answered at once: the worker sends one every half second to tell a launcher that
    stopped answering (frozen, or stuck) from one that is merely quiet."""

    def reply_type(self) -> type[PingReply]:
        return PingReply


@dataclass(frozen=True)
class AdoptRequest(Request[AdoptReply]):
    """Supervise a job a dead launcher ran, from the copies of its handles the worker kept
    (see JobHandles); sent, with those descriptors, before a new launcher's first hello."""

    handles: JobHandles

    def reply_type(self) -> type[AdoptReply]:
        return AdoptReply


@dataclass(frozen=True)
class ShutdownRequest(Request[ShutdownReply]):
    """Stop every job (with ``grace``), then exit."""

    grace: float

    def reply_type(self) -> type[ShutdownReply]:
        return ShutdownReply


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputAdvanced:
    """Job ``id``'s log is committed up to ``size`` bytes (whole frames)."""

    id: str
    size: int


@dataclass(frozen=True)
class OutputTruncated:
    """Job ``id``'s log keeps nothing more, for ``reason`` (its cap, or a failing disk)."""

    id: str
    reason: str


@dataclass(frozen=True)
class JobExited:
    """Job ``id`` has ended and nothing of it is alive; its result is in its record too."""

    id: str
    result: JobResult


@dataclass(frozen=True)
class JobHandles:
    """Copies of a running job's handles, sent with the descriptors themselves (SCM_RIGHTS),
    one per name in ``streams`` ("stdout", "stderr", "report": the read ends of its pipes;
    "init": a pidfd of its init), and what a launcher needs to take the job over.

    The worker keeps them while the job runs: the pipes stay open through a launcher's death
    (its job writes on, into the pipe, instead of dying of SIGPIPE), and a new launcher is
    given them back (AdoptRequest). Sent when a job starts and, for every running job, before
    the answer to a hello.
    """

    id: str
    streams: tuple[str, ...]
    record: JobRecord
    record_size: int  # bytes of its record frame, the head of its log
    timeout: float | None  # what the start asked for that its record does not hold
    grace: float
    output_cap: int

    def request(self) -> StartRequest:
        """The start this job came from, as far as supervising it needs."""
        job = self.record
        return StartRequest(
            argv=job.argv,
            owner=job.owner,
            limits=job.limits,
            env=job.env,
            cwd=job.cwd,
            uid=None,
            gid=None,
            timeout=self.timeout,
            grace=self.grace,
            output_cap=self.output_cap,
            request_id=job.request_id,
        )


@dataclass(frozen=True)
class LauncherBusy:
    """Sent instead of serving: another server holds this launcher's one connection."""


@dataclass(frozen=True)
class ConnectionLost:
    """Made by the worker's own end, never sent: the connection to the launcher is gone."""


Event = OutputAdvanced | OutputTruncated | JobExited | JobHandles | LauncherBusy | ConnectionLost

# The names messages travel under: a request as {"op": name, ...}, an event as {"ev": name}.
REQUEST_NAMES: Mapping[type[Request[Any]], str] = MappingProxyType(
    {
        StartRequest: "start",
        StopRequest: "stop",
        HelloRequest: "hello",
        ShutdownRequest: "shutdown",
        PingRequest: "ping",
        AdoptRequest: "adopt",
    }
)
EVENT_NAMES: Mapping[type[Event], str] = MappingProxyType(
    {
        OutputAdvanced: "output",
        OutputTruncated: "truncated",
        JobExited: "exit",
        JobHandles: "handles",
        LauncherBusy: "busy",
    }
)
