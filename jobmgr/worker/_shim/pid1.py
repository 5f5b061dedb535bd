"""The boundary with the init (_pid1.c): the two messages it reads and the lines it reports.

Both messages go down the init's order pipe as NUL-terminated fields (parsed by _order.c):
the slot's set-up as the slot is made, ``<length>\\n`` then ``uid gid disk binds userns
nhidden hidden...``; the order when a start takes the slot, ``mode uid gid disk userns cwd argc
argv... envc env... nbinds (source target rw)... nmasks masks... rootfs``, after which the
pipe is closed. The init reports one line per event on its report pipe: ``pid N`` (from the
mid child, the init's host pid), ``ready``, ``started``, ``error <stage> <message>`` and
``exit <wait status>`` (followed by `` stopped`` when the launcher's stop reached the job
before it ended).

The launcher's stops travel as signals to the init, through its pidfd: STOP_SIGNAL asks it to
SIGTERM every process of the job, KILL_SIGNAL to SIGKILL them (see _pid1_supervise.c).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from .._spec import Limits, Mount
from .codec import ProtocolError
from .messages import SlotSettings, StartRequest
from .stages import StartStage

STOP_SIGNAL = signal.SIGTERM  # sent from outside its namespace: SIGTERM every process of the job
KILL_SIGNAL = signal.SIGUSR1  # sent from outside its namespace: SIGKILL every process of the job


def encode_setup(uid: int, gid: int, slots: SlotSettings) -> bytes:
    """The set-up of a slot whose own uid and gid are ``uid``, ``gid``."""
    binds = "1" if slots.binds else "0"
    userns = "1" if slots.user_namespaces else "0"
    body = _fields(
        [str(uid), str(gid), _disk(slots.limits), binds, userns, *_counted(slots.hidden)]
    )
    return f"{len(body)}\n".encode() + body


def encode_order(start: StartRequest, uid: int, masks: Iterable[str], slots: SlotSettings) -> bytes:
    """The order for ``start`` in a slot whose own uid (and gid) is ``uid``, covering the host
    sockets ``masks``; strings carrying surrogate escapes become the exact bytes they stand
    for."""
    env = [f"{key}={value}" for key, value in start.env.items()]
    named = start.uid is not None and not start.root
    fields = [
        "root" if start.root else "user",
        str(start.uid if named else uid),
        str(start.gid if named else uid),
        _disk(start.limits),
        "1" if slots.user_namespaces else "0",
        start.cwd or "",
        *_counted(start.argv),
        *_counted(env),
        str(len(start.mounts)),
        *(item for mount in start.mounts for item in _bind(mount)),
        *_counted(list(masks)),
        start.rootfs or "",
    ]
    return _fields(fields)


def _bind(mount: Mount) -> tuple[str, str, str]:
    return mount.source, mount.target, "rw" if mount.writable else "ro"


def _counted(items: Iterable[str]) -> list[str]:
    listed = list(items)
    return [str(len(listed)), *listed]


def _disk(limits: Limits) -> str:
    """The size of a job's tmpfs, in bytes (0: unlimited)."""
    return str(limits.effective("disk_bytes") or 0)


def _fields(items: Iterable[str]) -> bytes:
    return b"".join(os.fsencode(item) + b"\0" for item in items)


@dataclass(frozen=True)
class InitPid:
    """The init's host pid, reported by the mid child that forked it; ``cloned``: the mid
    was cloned into the job's cgroup (CLONE_INTO_CGROUP), else it joined by cgroup.procs."""

    pid: int
    cloned: bool = False


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
            pid, _, how = value.partition(b" ")
            if how not in (b"cloned", b"joined"):
                raise ValueError(how)
            return InitPid(int(pid), cloned=how == b"cloned")
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
