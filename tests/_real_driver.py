"""What the cgroup driver tests against the real kernel share: a driver of the version a file
tests, under a parent of the test's own, and processes placed in its cgroups."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from harness.cgroups import remove_all
from jobmgr.worker import DEFAULT_LIMITS, UNLIMITED, Limits
from jobmgr.worker.cgroups import detect_driver, v1, v2
from tests._spawn_in_cgroup import spawn

D = TypeVar("D", v1.Driver, v2.Driver)
Spawn = Callable[..., "subprocess.Popen[bytes]"]

MiB = 1024 * 1024
LOW = Limits(cpu=0.5, memory_bytes=64 * MiB, io_read_bps=MiB, io_write_bps=MiB, pids=10)
HIGH = Limits(cpu=2, memory_bytes=1024 * MiB, io_read_bps=None, io_write_bps=4 * MiB, pids=4096)
# A spare is made with the default limits and changed when a job asks for others: each
# (now, to) a test moves a cgroup between, and what the move does.
limit_moves = pytest.mark.parametrize(
    ("now", "to"),
    [(DEFAULT_LIMITS, HIGH), (DEFAULT_LIMITS, UNLIMITED), (DEFAULT_LIMITS, LOW), (HIGH, LOW)],
    ids=["raised", "lifted", "lowered", "mixed"],
)


def driver_or_skip(kind: type[D], parent: str) -> D:
    """This machine's driver for ``parent``; the test is skipped if it is not a ``kind``."""
    driver = detect_driver(parent)
    if not isinstance(driver, kind):
        pytest.skip(f"this machine uses cgroup v{driver.version} (make test-v2 runs v2 in a VM)")
    return driver


def own_driver(kind: type[D], left: Callable[[D], list[str]]) -> Iterator[D]:
    """For a fixture: a ``kind`` driver under a parent unique to one test. Afterwards whatever
    it made is removed, and ``left``, which looks for the parent's directories without asking
    the driver, must find none."""
    driver = driver_or_skip(kind, f"jobmgr-test-cg-{uuid.uuid4().hex[:12]}")
    yield driver
    remove_all(driver.parent)
    assert left(driver) == [], "cgroups outlived the test"


def spawner() -> Iterator[Spawn]:
    """For a fixture: start a process already placed in a cgroup, as the launcher does; every
    one is killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(cgroup: v1.Cgroup | v2.Cgroup, *argv: str) -> subprocess.Popen[bytes]:
        proc = spawn(cgroup, *argv)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
