"""Typed errors of the worker library; the service maps each to one gRPC status code."""


class WorkerError(Exception):
    """Base class of every error the worker library raises on purpose."""


class JobNotFound(WorkerError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class InvalidSpec(WorkerError, ValueError):
    """The job specification is malformed (empty argv, negative limit, ...)."""


class OffsetPastEnd(InvalidSpec):
    """An output offset beyond the output the job's log holds."""


class LaunchError(WorkerError):
    """The command could not be started (not found, not executable, ...)."""


class CommandNotFound(LaunchError):
    """The command is not in the job's PATH, or is no file."""


class NotExecutable(LaunchError):
    """The command exists but could not be executed (no permission, not a program)."""


class CapacityError(WorkerError):
    """The worker refuses new jobs: too many are running."""


class WorkerUnavailable(WorkerError):
    """The launcher process is gone or the worker has been closed."""


class DeadlineExceeded(WorkerError):
    """The caller's deadline passed before the job could be launched; it was not started."""


class OutputIncomplete(WorkerError):
    """A job's output lacks bytes the job wrote (it was lost, or its log is damaged); raised
    after the rest of its output has been read, saying what is missing."""
