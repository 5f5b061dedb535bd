"""The launcher out of file descriptors: starts are refused as over capacity, saying why, and
nothing leaks."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from harness.cgroups import job_dirs, job_names, parent_dirs
from harness.poll import eventually
from harness.worker import wait_until_ended
from jobmgr.worker import CapacityError, JobSpec, JobState, Worker


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slots_that_cannot_be_made_leave_no_fd_file_or_cgroup(
    worker: Worker, cgroup_parent: str, tmp_path: Path
) -> None:
    process = worker._launcher.process
    assert process is not None
    spares = tmp_path / "state" / "spares"
    eventually(lambda: len(os.listdir(spares)) == 4, what="the warm slots")
    fds_before = open_fds(process.pid)
    soft, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)
    # A new slot needs eleven descriptors (its log, its uid's lease, four pipes and one kept
    # for its init's pidfd): with four to spare, making one fails part way.
    resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (fds_before + 4, hard))
    started: list[str] = []
    refused: list[str] = []
    try:
        for _ in range(8):  # running jobs keep their slots: past the four spares, new ones
            try:
                started.append(worker.start(JobSpec(["sleep", "1"])))
            except CapacityError as exc:
                refused.append(str(exc))
    finally:
        resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert refused, "every start found a slot: the limit was not reached"
    assert all("no file descriptors left" in reason for reason in refused), refused
    for job_id in started:
        assert wait_until_ended(worker, job_id).state is JobState.EXITED
    wait_until_ended(worker, worker.start(JobSpec(["true"])))  # slots warm again
    eventually(
        lambda: len(os.listdir(spares)) == 4 and open_fds(process.pid) == fds_before,
        what="the launcher to settle with four spares and its fds as before",
    )
    slot_cgroups = [d for job in job_names(cgroup_parent) for d in job_dirs(cgroup_parent, job)]
    # Each spare's cgroup, in every hierarchy the driver places jobs in (one per v1 hierarchy).
    hierarchies = len(parent_dirs(cgroup_parent))
    assert hierarchies and len(slot_cgroups) == 4 * hierarchies, (hierarchies, slot_cgroups)
