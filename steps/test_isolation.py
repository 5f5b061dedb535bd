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
from typing import Any

import pytest
from pytest_bdd import parsers, scenarios, then, when

from jobmgr.worker import JobSpec, Stream, Worker

from .fixtures_worker import collected, wait_until_ended

scenarios("isolation.feature")


def _stdout(worker: Worker, ctx: dict[str, Any]) -> str:
    return collected(worker, ctx["job"])[Stream.STDOUT].decode()


@when("the job's output is complete")
def _complete(worker: Worker, ctx: dict[str, Any]) -> None:
    ctx["stdout"] = _stdout(worker, ctx)


@then(parsers.parse("the PID in the output is at most {high:d}"))
def _low_pid(worker: Worker, ctx: dict[str, Any], high: int) -> None:
    pid = int(_stdout(worker, ctx).split()[0])
    assert 1 <= pid <= high, pid


@then(
    parsers.parse("the numeric entries of the listing are at most {count:d} and all below {top:d}")
)
def _proc_listing(ctx: dict[str, Any], count: int, top: int) -> None:
    pids = [int(name) for name in ctx["stdout"].split() if name.isdigit()]
    assert pids, ctx["stdout"]
    assert len(pids) <= count and max(pids) < top, pids


@then(parsers.parse("the output lists at most {count:d} processes"))
def _ps(worker: Worker, ctx: dict[str, Any], count: int) -> None:
    lines = _stdout(worker, ctx).strip().splitlines()
    assert 1 <= len(lines) <= count, lines


@then(parsers.parse('the only interface listed is "{name}"'))
def _only_lo(worker: Worker, ctx: dict[str, Any], name: str) -> None:
    lines = _stdout(worker, ctx).splitlines()
    interfaces = [
        line.split(":")[0].strip() for line in lines[2:] if ":" in line and "|" not in line
    ]
    interfaces = [i for i in interfaces if i and not i[0].isdigit()]
    assert interfaces == [name], lines


@then("the loopback interface is up")
def _lo_up(worker: Worker, ctx: dict[str, Any]) -> None:
    link = [line for line in _stdout(worker, ctx).splitlines() if line[:1].isdigit()]
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
def _mount_job(worker: Worker, ctx: dict[str, Any], host_dir: Path) -> None:
    target = host_dir / "mnt"
    target.mkdir()
    ctx["target"] = target
    script = f"mount -t tmpfs none {target} && touch {target}/inside && echo mounted; sleep 1000"
    ctx["job"] = worker.start(JobSpec(["sh", "-c", script], run_as="root"))
    for chunk in worker.output(ctx["job"]):
        if b"mounted" in chunk.data:
            return
    raise AssertionError("the job could not mount")


@when(parsers.parse('I start as root "{command}"'))
def _start_as_root(worker: Worker, ctx: dict[str, Any], command: str) -> None:
    ctx["job"] = worker.start(JobSpec(shlex.split(command), run_as="root"))


@then("while it runs the host sees neither the mount nor the file")
def _invisible(worker: Worker, ctx: dict[str, Any]) -> None:
    target: Path = ctx["target"]
    assert not os.path.ismount(target)
    assert not (target / "inside").exists()
    assert str(target) not in Path("/proc/self/mountinfo").read_text()
    worker.stop(ctx["job"], grace=1)
    wait_until_ended(worker, ctx["job"])
    assert not os.path.ismount(target)


@then("the host's hostname is unchanged")
def _hostname(ctx: dict[str, Any]) -> None:
    time.sleep(0)
    assert socket.gethostname() != "job-inside-test"


@when("I start a job that tries every way to move itself into the root cgroup")
def _escape(worker: Worker, ctx: dict[str, Any]) -> None:
    script = (
        "for c in /sys/fs/cgroup/*; do echo $$ > $c/cgroup.procs; done 2>/dev/null;"
        " mkdir -p /scratch/cg && mount -t cgroup -o pids none /scratch/cg"
        " && echo $$ > /scratch/cg/cgroup.procs;"
        " echo tried; exec sleep 1000"
    )
    ctx["job"] = worker.start(JobSpec(["sh", "-c", script], run_as="root"))
    for chunk in worker.output(ctx["job"]):
        if b"tried" in chunk.data:
            return
    raise AssertionError("the job ended early")


@then("all of the job's processes are still in its own cgroup")
def _still_inside(worker: Worker, ctx: dict[str, Any], cgroup_parent: str) -> None:
    for hierarchy in ("pids", "cpu", "memory"):
        procs = Path(f"/sys/fs/cgroup/{hierarchy}/{cgroup_parent}/{ctx['job']}/cgroup.procs")
        assert len(procs.read_text().split()) == 2, (hierarchy, "init and sleep should be there")
    worker.stop(ctx["job"], grace=1)
