"""What a caller learns about a job: its state and what it used."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._spec import Limits


class JobState(enum.Enum):
    """Lifecycle of a job. Only RUNNING is not final."""

    RUNNING = "RUNNING"
    EXITED = "EXITED"  # the job's own process ended by exit(), whatever the code
    STOPPED = "STOPPED"  # ended after a Stop request
    FAILED = "FAILED"  # killed by a signal nobody asked for (OOM included)
    LOST = "LOST"  # its supervisor died; what was left of it was killed


class Stream(enum.IntEnum):
    """Which of the job's output streams a chunk came from."""

    STDOUT = 1
    STDERR = 2


@dataclass(frozen=True)
class OutputChunk:
    """Bytes the job wrote to one stream, in the order they were written; ``offset`` is where
    the first of them sits in the job's output (stdout and stderr together, see
    _outputlog.FrameIndex); ``captured_at`` when the launcher took the first of them from
    the job's pipe, in ns since the epoch (None in a log written without capture times, see
    _timemarks)."""

    stream: Stream
    data: bytes
    offset: int = 0
    captured_at: int | None = None


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job.

    exit_code is the job's exact exit status when it exited on its own, else None;
    signal is the number of the signal that ended it, else None.
    cpu_seconds and peak_memory_bytes are live while it runs and final afterwards.
    reason says why it ended when that is not plain (stopped, timed out, OOM, lost);
    output_truncated is set once output was dropped (the output cap, or a full disk);
    request_id is the id its client gave the Start (empty if none): a retried Start with the
    same id, from the same owner, finds this job instead of starting another.
    """

    id: str
    argv: tuple[str, ...]
    owner: str
    limits: Limits
    state: JobState
    started_at: float
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0
    reason: str = ""
    output_truncated: bool = False
    request_id: str = ""

    @property
    def terminated(self) -> bool:
        """True once the job has ended, for whatever reason."""
        return self.state is not JobState.RUNNING
