"""Every message the worker (in the server) and its launcher exchange, and what they mean.

Requests go from the worker to the launcher; each is answered once, by the reply its
``reply_type`` names or by RequestFailed. Events go from the launcher unasked. A job's record
and result travel in messages and also sit on disk, in the record frame at the head of its
log (see _records). Every field is part of the contract: a field added later gets a default,
so a reader that has it still reads a writer that does not (see codec).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from .._errors import (
    CapacityError,
    CommandNotFound,
    InvalidSpec,
    LaunchError,
    NotExecutable,
    WorkerError,
)
from .._spec import Limits, Mount
from .._status import JobState, JobStatus

# Raised with every change a peer of the other version would misread.
PROTOCOL_VERSION = 3
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

    def status(self) -> JobStatus:
        """The job as it is while it runs."""
        return JobStatus(
            id=self.id,
            argv=self.argv,
            owner=self.owner,
            limits=self.limits,
            state=JobState.RUNNING,
            started_at=self.started_at,
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
    """A job the launcher supervises, and how much of its log is committed."""

    id: str
    size: int


@dataclass(frozen=True)
class HelloReply:
    """Answers HelloRequest: the launcher's protocol version and the jobs it runs (starting ones
    with size 0), so a worker that (re)connects can adopt them."""

    version: int
    running: tuple[RunningJob, ...]


@dataclass(frozen=True)
class ShutdownReply:
    """Answers ShutdownRequest once every job has ended; the launcher then exits."""


class StartStage(enum.Enum):
    """Where a start failed. The init writes the first six (``error <stage> <message>``,
    see _pid1.c), the launcher the others."""

    USER = "user"  # switching to the job's user
    CWD = "cwd"  # entering the job's working directory
    NOT_FOUND = "notfound"  # the command is not in PATH (ENOENT)
    EXEC = "exec"  # executing the command failed otherwise (EACCES, ENOEXEC, ...)
    MOUNT = "mount"  # a mount or root filesystem the request asked for
    SETUP = "setup"  # the slot: its cgroup, namespaces, view, init or order
    LIMITS = "limits"  # the kernel refused the job's limits
    SPACE = "space"  # the state directory is full
    DESCRIPTORS = "descriptors"  # the launcher has no file descriptors left
    UIDS = "uids"  # every uid of the range belongs to a live job


# The one place a failed start becomes the worker's error: what the caller did wrong
# (LaunchError, InvalidSpec), what the server lacks (CapacityError), or neither.
STAGE_ERRORS: Mapping[StartStage, type[WorkerError]] = MappingProxyType(
    {
        StartStage.USER: LaunchError,
        StartStage.CWD: LaunchError,
        StartStage.NOT_FOUND: CommandNotFound,
        StartStage.EXEC: NotExecutable,
        StartStage.MOUNT: LaunchError,
        StartStage.SETUP: WorkerError,
        StartStage.LIMITS: InvalidSpec,
        StartStage.SPACE: CapacityError,
        StartStage.DESCRIPTORS: CapacityError,
        StartStage.UIDS: CapacityError,
    }
)


@dataclass(frozen=True)
class RequestFailed:
    """Answers any request the launcher could not carry out; ``stage`` is set for a start."""

    error: str
    stage: StartStage | None = None

    def start_error(self) -> WorkerError:
        """The worker's error for a start that failed so (see STAGE_ERRORS)."""
        error_class = STAGE_ERRORS[self.stage or StartStage.SETUP]
        if error_class is WorkerError:
            return WorkerError(f"starting the job failed: {self.error}")
        return error_class(self.error)


class StartRefused(Exception):
    """The launcher turns a start down before its init is given an order."""

    def __init__(self, stage: StartStage, message: str) -> None:
        super().__init__(message)
        self.stage = stage

    def failure(self) -> RequestFailed:
        return RequestFailed(str(self), self.stage)


Reply = StartReply | StopReply | HelloReply | ShutdownReply


# ---- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRequest(Request[StartReply]):
    """Run ``argv`` in a warm slot: limits applied, record written, then the order sent.

    ``uid``/``gid`` None runs the job as the slot's own uid, or, with ``root``, as root of a
    user namespace mapped to it; a named user's ``uid``/``gid`` run it as that user (never
    root). ``grace`` is the SIGTERM-to-SIGKILL time when ``timeout`` stops it;
    ``output_cap`` bytes of output are kept at most (0: no cap). ``mounts`` and ``rootfs``
    have been checked against the worker's Sandbox and resolved on the host.
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

    def reply_type(self) -> type[StartReply]:
        return StartReply

    def record(self, job_id: str, started_at: float, uid: int | None = None) -> JobRecord:
        """The record of the job this request starts (as host uid ``uid``)."""
        return JobRecord(
            id=job_id,
            argv=self.argv,
            owner=self.owner,
            limits=self.limits,
            env=self.env,
            cwd=self.cwd,
            started_at=started_at,
            uid=uid,
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
    take theirs from, the host paths the view hides, the size its private tmpfs starts with
    (the default disk limit: a start that keeps it resizes nothing), whether jobs may make
    user namespaces, and whether a start may bind host paths (else a slot lets go of its
    clone of the host's root while it warms)."""

    uid_first: int
    uid_last: int
    hidden: tuple[str, ...] = ()
    disk: int = 0
    user_namespaces: bool = False
    binds: bool = False  # a start may bind host paths or ask for a root of its own


@dataclass(frozen=True)
class HelloRequest(Request[HelloReply]):
    """The first request of a connection: who speaks which version, and what runs. The
    launcher makes slots only once a hello has said how (``slots``); a hello that says it
    otherwise lets the spares made before go."""

    version: int
    slots: SlotSettings | None = None

    def reply_type(self) -> type[HelloReply]:
        return HelloReply


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
class LauncherBusy:
    """Sent instead of serving: another server holds this launcher's one connection."""


@dataclass(frozen=True)
class ConnectionLost:
    """Made by the worker's own end, never sent: the connection to the launcher is gone."""


Event = OutputAdvanced | OutputTruncated | JobExited | LauncherBusy | ConnectionLost

# The names messages travel under: a request as {"op": name, ...}, an event as {"ev": name}.
REQUEST_NAMES: Mapping[type[Request[Any]], str] = MappingProxyType(
    {StartRequest: "start", StopRequest: "stop", HelloRequest: "hello", ShutdownRequest: "shutdown"}
)
EVENT_NAMES: Mapping[type[Event], str] = MappingProxyType(
    {
        OutputAdvanced: "output",
        OutputTruncated: "truncated",
        JobExited: "exit",
        LauncherBusy: "busy",
    }
)
