"""A job as a user runs in its slot's standby, whose seccomp filter was loaded as the slot
warmed; a start whose standby is gone starts the job itself, confined the same."""

from __future__ import annotations

import os
import signal

from harness.poll import eventually
from harness.procs import children, ns_pids
from harness.worker import collected, wait_until_ended
from jobmgr.worker import JobSpec, JobState, Stream, Worker

# The job's pid in its namespace, then the lines of its status that say how it is confined.
PROBE = JobSpec(
    ["sh", "-c", "echo $$; grep -E '^(Seccomp|NoNewPrivs|CapEff|Uid):' /proc/$$/status"]
)


def standbys(worker: Worker) -> list[int]:
    """The standby of every spare: the child of each slot's init (PID 1 of its namespace)."""
    launcher = worker._launcher.process
    assert launcher is not None
    inits = [pid for pid in children(launcher.pid) if ns_pids(pid)[-1] == 1]
    return [child for init in inits for child in children(init)]


def probe(worker: Worker) -> list[str]:
    job_id = worker.start(PROBE)
    assert wait_until_ended(worker, job_id).state is JobState.EXITED
    return collected(worker, job_id)[Stream.STDOUT].decode().split("\n")


def confined(lines: list[str]) -> None:
    fields = dict(line.split(":\t", 1) for line in lines[1:] if line)
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1", fields
    assert fields["CapEff"] == "0000000000000000", fields
    assert fields["Uid"].split()[0] != "0", fields


def test_a_job_runs_as_its_slots_standby(worker: Worker) -> None:
    eventually(lambda: len(standbys(worker)) == 4, what="a standby in each of four spares")
    lines = probe(worker)
    assert lines[0] == "2", f"the job is not the standby (pid 2 of its namespace): {lines}"
    confined(lines)


def test_a_start_whose_standby_died_starts_the_job_itself(worker: Worker) -> None:
    eventually(lambda: len(standbys(worker)) == 4, what="a standby in each of four spares")
    for pid in standbys(worker):  # each init reaps its own when a start comes
        os.kill(pid, signal.SIGKILL)
    lines = probe(worker)
    assert lines[0] == "3", f"the job did not start as a new process: {lines}"
    confined(lines)
