"""A launcher slot's life: every move the table allows is made and logged at debug level, every
other move is refused."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from jobmgr.worker import UNLIMITED, Limits, Stream
from jobmgr.worker._pidfd import ProcessHandle
from jobmgr.worker._slot import TRANSITIONS, IllegalTransition, Slot, SlotState, transition
from jobmgr.worker.cgroups import CgroupStats, Device

S = SlotState
ALL_MOVES = list(itertools.product(SlotState, SlotState))
LEGAL = [(a, b) for a, b in ALL_MOVES if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_MOVES if b not in TRANSITIONS[a]]


class NoCgroup:
    """Stands in for a slot's cgroup: the state machine never touches it."""

    name = "none"

    @property
    def procs_files(self) -> list[str]:
        return []

    @property
    def clone_dir(self) -> None:
        return None

    def change_limits(self, now: Limits, to: Limits) -> None:
        pass

    def allow_devices(self, devices: tuple[Device, ...]) -> None:
        pass

    def pids(self) -> list[int]:
        return []

    def kill_all(self) -> None:
        pass

    def stats(self) -> CgroupStats:
        return CgroupStats(0.0, 0, False)

    def destroy(self) -> None:
        pass


def new_slot() -> Slot:
    return Slot("s1", 1879048192, NoCgroup(), UNLIMITED, Path("/nonexistent"), None, {}, None, None)


def test_the_life_of_a_job_and_of_a_spare_are_legal_moves() -> None:
    job_life = [S.WARMING, S.READY, S.STARTING, S.RUNNING, S.STOPPING, S.ENDED]
    refused_start = [S.WARMING, S.STARTING, S.DISCARDED, S.ENDED]
    spare_let_go = [S.WARMING, S.READY, S.DISCARDED, S.ENDED]
    for life in (job_life, refused_start, spare_let_go):
        assert all(b in TRANSITIONS[a] for a, b in itertools.pairwise(life))


def test_every_state_but_ended_can_end_and_ended_is_final() -> None:
    assert all(S.ENDED in TRANSITIONS[state] for state in SlotState if state is not S.ENDED)
    assert TRANSITIONS[S.ENDED] == frozenset()
    assert set(TRANSITIONS) == set(SlotState)


@pytest.mark.parametrize("current,to", ILLEGAL, ids=lambda s: s.value)
def test_every_move_the_table_does_not_allow_is_refused(current: SlotState, to: SlotState) -> None:
    with pytest.raises(IllegalTransition, match=f"from {current.value} to {to.value}"):
        transition("s1", current, to)


@pytest.mark.parametrize("current,to", LEGAL, ids=lambda s: s.value)
def test_every_legal_move_is_made_and_logged_at_debug_level(
    current: SlotState, to: SlotState, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="jobmgr.launcher"):
        assert transition("s1", current, to) is to
    assert caplog.records == []  # launcher.log gets no line per move by default
    with caplog.at_level(logging.DEBUG, logger="jobmgr.launcher"):
        transition("s1", current, to)
    assert [r.getMessage() for r in caplog.records] == [f"slot s1: {current.value} -> {to.value}"]


def test_a_slot_moves_only_through_the_table() -> None:
    slot = new_slot()
    assert slot.state is S.WARMING
    with pytest.raises(IllegalTransition):
        slot.move(S.RUNNING)
    assert slot.state is S.WARMING  # a refused move changes nothing
    for state in (S.READY, S.STARTING, S.RUNNING, S.STOPPING, S.ENDED):
        slot.move(state)
        assert slot.state is state
    with pytest.raises(AttributeError):
        slot.state = S.READY  # type: ignore[misc]


def test_a_slot_is_gone_once_its_pipes_are_closed_and_its_init_ended() -> None:
    slot = new_slot()
    slot.pipes, slot.report_fd = {3: Stream.STDOUT, 4: Stream.STDERR}, 5
    assert not slot.gone
    slot.pipes, slot.report_fd = {}, None
    assert slot.gone  # no init was ever reported
    slot.init = ProcessHandle(-1, 4242)  # its pidfd, once the mid reported its pid
    assert not slot.gone
    slot.init.ended = True  # its pidfd became readable
    assert slot.gone
