"""A job slot as the launcher holds it: a cgroup with an init waiting in it, and once a start
takes it, the job running there.

A slot's life is a state machine, moved only by ``Slot.move``, which refuses a move the table
does not allow (IllegalTransition, which the launcher logs) and logs each legal one at debug
level (``jobmgr-launcher --debug``):

    WARMING ──> READY ──> STARTING ──> RUNNING ──> STOPPING ──> ENDED
       │          │          │            └────────────────────────^
       └──────────┴──────────┴──> DISCARDED ──> ENDED

A spare (WARMING, READY) belongs to the warm pool; a start takes it (STARTING) and from then
on it is a job's. DISCARDED is a slot given up without a job to show for it: a spare let go,
a spare that failed to warm, a start refused. Any slot can end abruptly (its init killed),
so every state but ENDED may move to ENDED; a slot is ENDED once its pipes are closed and its
init reaped, and nothing of it is left.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ._capture import LogWriter
from ._pidfd import ProcessHandle
from ._shim import InitExited, JobRecord, StartRequest
from ._spec import Limits
from ._status import Stream
from .cgroups import JobCgroup

log = logging.getLogger("jobmgr.launcher")


class SlotState(enum.Enum):
    WARMING = "warming"  # its init is being made: cgroup joined, namespaces unshared
    READY = "ready"  # its init waits for an order
    STARTING = "starting"  # a start took it: limits set, record written, order sent
    RUNNING = "running"  # the command runs, and the launcher holds its init's pidfd
    STOPPING = "stopping"  # a stop or a timeout asked it to end: SIGTERM, then SIGKILL
    DISCARDED = "discarded"  # given up without a job; its init is on its way out
    ENDED = "ended"  # pipes closed, init reaped, cgroup removed


_S = SlotState
TRANSITIONS: Mapping[SlotState, frozenset[SlotState]] = MappingProxyType(
    {
        _S.WARMING: frozenset({_S.READY, _S.STARTING, _S.DISCARDED, _S.ENDED}),
        _S.READY: frozenset({_S.STARTING, _S.DISCARDED, _S.ENDED}),
        _S.STARTING: frozenset({_S.RUNNING, _S.DISCARDED, _S.ENDED}),
        _S.RUNNING: frozenset({_S.STOPPING, _S.ENDED}),
        _S.STOPPING: frozenset({_S.ENDED}),
        _S.DISCARDED: frozenset({_S.ENDED}),
        _S.ENDED: frozenset(),
    }
)
SPARE_STATES = frozenset({SlotState.WARMING, SlotState.READY})
JOB_STATES = frozenset({SlotState.RUNNING, SlotState.STOPPING})  # a job the server knows


class IllegalTransition(Exception):
    """A move the slot's state machine does not allow: a bug in the launcher."""

    def __init__(self, slot_id: str, current: SlotState, to: SlotState) -> None:
        super().__init__(f"slot {slot_id}: no move from {current.value} to {to.value}")


def transition(slot_id: str, current: SlotState, to: SlotState) -> SlotState:
    """``to``, if a slot in state ``current`` may move there; IllegalTransition otherwise."""
    if to not in TRANSITIONS[current]:
        raise IllegalTransition(slot_id, current, to)
    log.debug("slot %s: %s -> %s", slot_id, current.value, to.value)
    return to


@dataclass
class Job:
    """What a slot holds once a start takes it."""

    request: StartRequest
    start_req: int  # the start request's id, to answer
    record: JobRecord
    log: LogWriter | None = None  # once its record is written
    stop_reason: str = ""  # set once the launcher asked it to stop
    stop_waiters: list[int] = field(default_factory=list)  # stop requests to answer at its end
    record_size: int = 0  # bytes of its record frame, the head of its log


@dataclass(eq=False)
class Slot:
    """One slot: its cgroup, the launcher's ends of its pipes, its init, and its job."""

    id: str  # also the id of the job it runs
    uid: int  # its own uid (and gid), held while its init lives (see _uids)
    cgroup: JobCgroup
    limits: Limits  # what its cgroup has now
    path: Path  # its spare file while it warms, then the job's log
    log_fd: int | None  # that file, until the job's LogWriter takes it over
    pipes: dict[int, Stream]  # the job's stdout and stderr, while open
    report_fd: int | None  # the init's report lines, while open
    order_fd: int | None  # the init's order, until sent or given up
    pidfd_room: int | None = None  # a descriptor kept free for the init's pidfd
    report_buf: bytes = b""  # a report line read in part
    init: ProcessHandle | None = None  # a pidfd of its init, once the mid reported its pid
    started: bool = False  # the init reported that the command runs
    exit_report: InitExited | None = None  # how the command ended, as the init reported it
    job: Job | None = None
    _state: SlotState = field(default=SlotState.WARMING, init=False)

    @property
    def state(self) -> SlotState:
        return self._state

    def move(self, to: SlotState) -> None:
        """Move to state ``to``, or raise IllegalTransition."""
        self._state = transition(self.id, self._state, to)

    def release_pidfd_room(self) -> None:
        """Free the descriptor kept for the init's pidfd (for the pidfd to take, or at the
        slot's end)."""
        if self.pidfd_room is not None:
            os.close(self.pidfd_room)
            self.pidfd_room = None

    @property
    def size(self) -> int:
        """Bytes of the job's log committed so far."""
        return self.job.log.size if self.job is not None and self.job.log is not None else 0

    @property
    def gone(self) -> bool:
        """True once nothing of it is alive: pipes closed and init ended (if it had one)."""
        if self.pipes or self.report_fd is not None:
            return False
        return self.init is None or self.init.ended
