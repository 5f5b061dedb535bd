"""The boundary with the init (_pid1.c): the order it reads and the lines it reports.

The order is NUL-terminated fields, ``uid gid cwd argc argv... envc env...`` (an empty uid keeps
the launcher's user), written once to the init's order pipe and closed. The init reports one
line per event on its report pipe: ``pid N`` (from the mid child, the init's host pid),
``ready``, ``started``, ``error <stage> <message>`` and ``exit <wait status>`` (followed by
`` stopped`` when the launcher's stop reached the job before it ended).

The launcher's stops travel as signals to the init, through its pidfd: STOP_SIGNAL asks it to
SIGTERM every process of the job, KILL_SIGNAL to SIGKILL them (see _pid1_supervise.c).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from .codec import ProtocolError
from .messages import StartRequest
from .stages import StartStage

STOP_SIGNAL = signal.SIGTERM  # sent from outside its namespace: SIGTERM every process of the job
KILL_SIGNAL = signal.SIGUSR1  # sent from outside its namespace: SIGKILL every process of the job


def encode_order(start: StartRequest) -> bytes:
    """The order for ``start``; strings carrying surrogate escapes become the exact bytes
    they stand for."""
    env = [f"{key}={value}" for key, value in start.env.items()]
    fields = [
        "" if start.uid is None else str(start.uid),
        "" if start.gid is None else str(start.gid),
        start.cwd or "/",
        str(len(start.argv)),
        *start.argv,
        str(len(env)),
        *env,
    ]
    return b"".join(os.fsencode(item) + b"\0" for item in fields)


@dataclass(frozen=True)
class InitPid:
    """The init's host pid, reported by the mid child that forked it."""

    pid: int


@dataclass(frozen=True)
class InitReady:
    """The init has made its namespaces and waits for its order."""


@dataclass(frozen=True)
class InitStarted:
    """The command runs."""


@dataclass(frozen=True)
class InitFailed:
    """The slot or the command could not be set up; the init exits."""

    stage: StartStage
    message: str


@dataclass(frozen=True)
class InitExited:
    """The command ended with this wait status; the init exits with it. ``stopped``: a stop
    signal reached the job before it ended (else it ended by itself)."""

    wait_status: int
    stopped: bool = False


InitReport = InitPid | InitReady | InitStarted | InitFailed | InitExited


def parse_report(line: bytes) -> InitReport:
    """One report line (without its newline)."""
    kind, _, value = line.partition(b" ")
    try:
        if kind == b"pid":
            return InitPid(int(value))
        if kind == b"exit":
            status, _, flag = value.partition(b" ")
            if flag not in (b"", b"stopped"):
                raise ValueError(flag)
            return InitExited(int(status), stopped=flag == b"stopped")
    except ValueError:
        raise ProtocolError(f"the init reported {line!r}") from None
    if kind == b"ready":
        return InitReady()
    if kind == b"started":
        return InitStarted()
    if kind == b"error":
        stage, _, message = value.decode(errors="replace").partition(" ")
        known = {s.value: s for s in StartStage}
        # Every stage the init names is in StartStage; anything else is a set-up failure.
        return InitFailed(known.get(stage, StartStage.SETUP), message)
    raise ProtocolError(f"the init reported {line!r}")
