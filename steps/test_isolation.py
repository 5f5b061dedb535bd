"""Steps for features/isolation.feature."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_bdd import parsers, scenarios, then, when

from harness.cgroups import job_procs_dirs
from harness.worker import collected, wait_for_output, wait_until_ended
from jobmgr.worker import JobSpec, Stream, Worker

from .fixtures_scenario import Scenario

scenarios("isolation.feature")


def _stdout(worker: Worker, scenario: Scenario) -> str:
    return collected(worker, scenario.job)[Stream.STDOUT].decode()


@when("the job's output is complete")
def _complete(worker: Worker, scenario: Scenario) -> None:
    scenario.notes["stdout"] = _stdout(worker, scenario)


@then(parsers.parse("the PID in the output is at most {high:d}"))
def _low_pid(worker: Worker, scenario: Scenario, high: int) -> None:
    pid = int(_stdout(worker, scenario).split()[0])
    assert 1 <= pid <= high, pid


@then(
    parsers.parse("the numeric entries of the listing are at most {count:d} and all below {top:d}")
)
def _proc_listing(scenario: Scenario, count: int, top: int) -> None:
    pids = [int(name) for name in scenario.notes["stdout"].split() if name.isdigit()]
    assert pids, scenario.notes["stdout"]
    assert len(pids) <= count and max(pids) < top, pids


@then(parsers.parse("the output lists at most {count:d} processes"))
def _ps(worker: Worker, scenario: Scenario, count: int) -> None:
    lines = _stdout(worker, scenario).strip().splitlines()
    assert 1 <= len(lines) <= count, lines


@then(parsers.parse('the only interface listed is "{name}"'))
def _only_lo(worker: Worker, scenario: Scenario, name: str) -> None:
    lines = _stdout(worker, scenario).splitlines()
    interfaces = [
        line.split(":")[0].strip() for line in lines[2:] if ":" in line and "|" not in line
    ]
    interfaces = [i for i in interfaces if i and not i[0].isdigit()]
    assert interfaces == [name], lines


@then("the loopback interface is up")
def _lo_up(worker: Worker, scenario: Scenario) -> None:
    link = [line for line in _stdout(worker, scenario).splitlines() if line[:1].isdigit()]
    assert link and "UP" in link[0].split("<")[1].split(">")[0].split(","), link


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory on the host that jobs see (read-only): not under /tmp, which is theirs."""
    path = Path("/var/lib") / f"jobmgr-test-{uuid.uuid4().hex}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@when("I start a job as root that mounts a tmpfs on a host directory and writes a file into it")
def _mount_job(worker: Worker, scenario: Scenario, host_dir: Path) -> None:
    target = host_dir / "mnt"
    target.mkdir()
    scenario.notes["target"] = target
    script = f"mount -t tmpfs none {target} && touch {target}/inside && echo mounted; sleep 1000"
    scenario.job = worker.start(JobSpec(["sh", "-c", script], run_as="root"))
    wait_for_output(worker, scenario.job, b"mounted")


@when(parsers.parse('I start as root "{command}"'))
def _start_as_root(worker: Worker, scenario: Scenario, command: str) -> None:
    scenario.job = worker.start(JobSpec(shlex.split(command), run_as="root"))


@then("while it runs the host sees neither the mount nor the file")
def _invisible(worker: Worker, scenario: Scenario) -> None:
    target: Path = scenario.notes["target"]
    assert not os.path.ismount(target)
    assert not (target / "inside").exists()
    assert str(target) not in Path("/proc/self/mountinfo").read_text()
    worker.stop(scenario.job, grace=1)
    wait_until_ended(worker, scenario.job)
    assert not os.path.ismount(target)


@then("the host's hostname is unchanged")
def _hostname(scenario: Scenario) -> None:
    time.sleep(0)
    assert socket.gethostname() != "job-inside-test"


@when("I start a job that tries every way to move itself into the root cgroup")
def _escape(worker: Worker, scenario: Scenario) -> None:
    script = (
        "for c in /sys/fs/cgroup/*; do echo $$ > $c/cgroup.procs; done 2>/dev/null;"
        " mkdir -p /scratch/cg && mount -t cgroup -o pids none /scratch/cg"
        " && echo $$ > /scratch/cg/cgroup.procs;"
        " echo tried; exec sleep 1000"
    )
    scenario.job = worker.start(JobSpec(["sh", "-c", script], run_as="root"))
    wait_for_output(worker, scenario.job, b"tried")


@then("all of the job's processes are still in its own cgroup")
def _still_inside(worker: Worker, scenario: Scenario, cgroup_parent: str) -> None:
    dirs = job_procs_dirs(cgroup_parent, scenario.job)
    assert dirs, "the job has no cgroup"
    for directory in dirs:  # one per hierarchy under cgroup v1
        procs = Path(directory, "cgroup.procs").read_text().split()
        assert len(procs) == 2, (directory, procs, "init and sleep should be there")
    worker.stop(scenario.job, grace=1)
