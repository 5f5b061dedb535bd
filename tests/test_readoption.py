"""The worker survives its own death: a new Worker re-adopts the jobs a killed one started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cgroups import job_dirs, parent_dirs, remove_all
from jobmgr.worker import JobState, OutputIncomplete, Stream, Worker

HOLDER = textwrap.dedent(
    """
    import sys, time
    from jobmgr.worker import JobSpec, Worker
    worker = Worker(sys.argv[1], cgroup_parent=sys.argv[2])
    print(worker.start(JobSpec(sys.argv[3:])), flush=True)
    time.sleep(1000)
    """
)


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[str]:
    name = f"jobmgr-test-readopt-{uuid.uuid4().hex[:8]}"
    yield name
    leaked = parent_dirs(name)
    pid_file = tmp_path / "state" / "launcher.pid"
    if pid_file.exists():  # a failed test may leave its launcher: clear it all the same
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    remove_all(name)
    assert leaked == [], "cgroups outlived the test"


def start_in_doomed_process(state: Path, parent: str, *argv: str) -> tuple[str, int]:
    """Start a job from a process holding its own Worker, then kill -9 that process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state), parent, *argv], stdout=subprocess.PIPE
    )
    assert holder.stdout is not None
    job_id = holder.stdout.readline().decode().strip()
    launcher_pid = int((state / "launcher.pid").read_text())
    holder.kill()
    holder.wait()
    return job_id, launcher_pid


def test_a_running_job_is_readopted_and_its_output_continues(tmp_path: Path, parent: str) -> None:
    state = tmp_path / "state"
    job_id, _ = start_in_doomed_process(
        state, parent, "sh", "-c", "echo before; sleep 1; echo after; exit 7"
    )
    with Worker(state, cgroup_parent=parent) as worker:
        assert worker.status(job_id).state is JobState.RUNNING
        out = b"".join(c.data for c in worker.output(job_id) if c.stream is Stream.STDOUT)
        assert out == b"before\nafter\n"
        status = worker.status(job_id)
        assert (status.state, status.exit_code) == (JobState.EXITED, 7)


def test_a_job_that_ended_while_no_server_ran_is_recorded(tmp_path: Path, parent: str) -> None:
    state = tmp_path / "state"
    job_id, _ = start_in_doomed_process(state, parent, "sh", "-c", "echo quick; exit 3")
    time.sleep(0.5)
    with Worker(state, cgroup_parent=parent) as worker:
        status = worker.status(job_id)
        assert (status.state, status.exit_code) == (JobState.EXITED, 3)
        assert b"".join(c.data for c in worker.output(job_id)) == b"quick\n"


def test_jobs_of_a_dead_launcher_are_lost_and_cleared(tmp_path: Path, parent: str) -> None:
    state = tmp_path / "state"
    job_id, launcher_pid = start_in_doomed_process(
        state, parent, "sh", "-c", "echo hello; exec sleep 1000"
    )
    time.sleep(0.2)
    os.kill(launcher_pid, signal.SIGKILL)
    with Worker(state, cgroup_parent=parent) as worker:
        status = worker.status(job_id)
        assert status.state is JobState.LOST
        assert "launcher" in status.reason
        received = b""
        with pytest.raises(OutputIncomplete, match="lost"):  # after all that was kept
            for chunk in worker.output(job_id):
                received += chunk.data
        assert received == b"hello\n"
        assert job_dirs(parent, job_id) == []
