"""What jobmgr.client hands out and takes in: frozen dataclasses and enums, no protobuf.

Importing this module loads neither grpc nor protobuf.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


class JobState(enum.Enum):
    """How a job stands or ended. Only RUNNING is not final."""

    RUNNING = "RUNNING"
    EXITED = "EXITED"  # it ended by itself, whatever its exit code
    STOPPED = "STOPPED"  # a Stop call, its timeout, or the server's shutdown ended it
    FAILED = "FAILED"  # a signal nobody asked for (the OOM killer's too)
    LOST = "LOST"  # its supervisor died; what was left of it was killed

    @classmethod
    def parse(cls, text: str) -> JobState:
        """A state from its name in any case (``running``, ``RUNNING``); ValueError if none."""
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(state.value.lower() for state in cls)
            raise ValueError(f"{text!r} is not a job state (one of: {names})") from None


class Stream(enum.IntEnum):
    """Which of the job's output streams bytes came from."""

    STDOUT = 1
    STDERR = 2


@dataclass(frozen=True)
class Limits:
    """A job's resource limits. None: the server's default; 0: unlimited."""

    cpu: float | None = None  # CPUs worth of time per second (0.5: half a core)
    memory_bytes: int | None = None  # RAM, swap included, before the OOM killer fires
    io_read_bps: int | None = None  # bytes per second read from each block device
    io_write_bps: int | None = None  # bytes per second written to each block device
    pids: int | None = None  # processes and threads alive at once
    # bytes the job may write to its scratch directory, /tmp, /var/tmp and /dev/shm together
    disk_bytes: int | None = None


@dataclass(frozen=True)
class Mount:
    """A host path bound into the job's view (only sources the server's configuration
    allows): ``source`` on the server at ``target`` in the job, read-only unless
    ``writable``."""

    source: str
    target: str
    writable: bool = False


@dataclass(frozen=True)
class JobSpec:
    """A job to start. ``argv`` items may be bytes (passed exactly) or str (the bytes
    ``os.fsencode`` makes of them). ``env`` adds to the job's minimal clean environment
    (PATH, HOME=/scratch, LANG=C.UTF-8); ``cwd`` is absolute (None: /scratch, the job's own);
    ``rootfs`` is a server directory to use as the job's root, read-only, where the server
    allows it; ``timeout`` and the other Nones take the server's defaults."""

    argv: Sequence[str | bytes]
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float | None = None  # seconds of runtime, then it is stopped
    run_as: str | None = None  # user name or uid, if the server allows it
    mounts: Sequence[Mount] = ()
    rootfs: str | None = None

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("a job needs a command: argv is empty")

    def argv_bytes(self) -> list[bytes]:
        return [arg if isinstance(arg, bytes) else os.fsencode(arg) for arg in self.argv]


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job.

    ``argv`` holds the command as the job got it: bytes that are not UTF-8 are kept as
    surrogate escapes (``os.fsencode`` gives them back). ``exit_code`` is set when the job
    exited by itself (an EXITED job, or a STOPPED one that exited on the SIGTERM), ``signal``
    when a signal ended it. Times are timezone-aware (UTC).
    """

    id: str
    state: JobState
    argv: tuple[str, ...]
    owner: str
    limits: Limits
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    signal: int | None
    oom_killed: bool
    cpu_seconds: float
    peak_memory_bytes: int
    reason: str
    output_truncated: bool
    argv_abbreviated: bool = False  # List replies cut a long command to its first KiB

    @property
    def ended(self) -> bool:
        return self.state is not JobState.RUNNING

    @property
    def exit_status(self) -> int | None:
        """What a shell would say of the job once it has ended: its exit code, or 128 + the
        signal that ended it (137 for SIGKILL); None while it runs and for a LOST job."""
        if not self.ended:
            return None
        if self.exit_code is not None:
            return self.exit_code
        return 128 + self.signal if self.signal else None


@dataclass(frozen=True)
class OutputChunk:
    """Bytes the job wrote to one stream; ``offset`` is where the first of them sits in the
    job's output: stdout and stderr together, in the order the server captured them.
    ``captured_at`` is when the server took the first of them from the job's pipe (its
    clock, UTC, at most a millisecond early); None for output a server without capture times
    logged."""

    stream: Stream
    data: bytes
    offset: int
    captured_at: datetime | None = None
