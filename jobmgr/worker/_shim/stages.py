"""Where a start can fail, and the one table from there to the worker's error: a failed start
crosses from the init to the launcher to the worker as a stage and a message, and becomes an
exception only at the worker's end (RequestFailed.start_error)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .._errors import (
    CapacityError,
    CommandNotFound,
    DeadlineExceeded,
    InvalidSpec,
    LaunchError,
    NotExecutable,
    WorkerError,
    WorkerUnavailable,
)


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
    DEADLINE = "deadline"  # the caller's deadline passed before the job could be launched
    SHUTDOWN = "shutdown"  # the launcher is shutting down


# The one place a failed start becomes the worker's error: what the caller did wrong
# (LaunchError, InvalidSpec), what the server lacks (CapacityError), what came too late
# (DeadlineExceeded, WorkerUnavailable), or neither.
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
        StartStage.DEADLINE: DeadlineExceeded,
        StartStage.SHUTDOWN: WorkerUnavailable,
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
