"""cgroup v1 driver against the real kernel: limits land in the files, processes are counted,
killed and measured, and every directory is gone afterwards."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from harness.cgroups import KERNEL_UNLIMITED_BYTES
from harness.poll import eventually
from jobmgr.worker import DEFAULT_LIMITS, UNLIMITED, Limits
from jobmgr.worker.cgroups import CgroupError, _devices, _kernfs, v1
from jobmgr.worker.cgroups._kernfs import Knob
from jobmgr.worker.cgroups._mounts import read_mounts, v1_controller_mounts
from tests._real_driver import LOW, Spawn, driver_or_skip, limit_moves, own_driver

MiB = 1024 * 1024


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/proc/self/mountinfo"),
    reason="needs root and Linux",
)


@pytest.fixture
def driver() -> Iterator[v1.Driver]:
    """A v1 driver under a parent unique to this test; nothing it made outlives the test."""
    yield from own_driver(v1.Driver, _parent_dirs)


def _parent_dirs(d: v1.Driver) -> list[str]:
    dirs = {os.path.join(m, d.parent) for m in d.mounts.values()}
    return sorted(p for p in dirs if os.path.exists(p))


def _read(cgroup: v1.Cgroup, controller: str, filename: str) -> str:
    with open(os.path.join(cgroup.dirs[controller], filename)) as f:
        return f.read().strip()


def test_this_machine_is_driven_with_v1_and_every_job_hierarchy() -> None:
    d = driver_or_skip(v1.Driver, "jobmgr-test-cg-unused")
    assert d.version == 1
    assert set(v1.CONTROLLERS) <= set(d.mounts)
    assert d.mounts == v1_controller_mounts(read_mounts("/proc/self/mountinfo"))


def test_limits_are_written_in_kernel_units(driver: v1.Driver) -> None:
    limits = Limits(cpu=0.5, memory_bytes=64 * MiB, io_read_bps=MiB, io_write_bps=2 * MiB, pids=10)
    cg = driver.create("job", limits)

    assert _read(cg, "cpu", "cpu.cfs_period_us") == "100000"
    assert _read(cg, "cpu", "cpu.cfs_quota_us") == "50000"
    assert _read(cg, "memory", "memory.limit_in_bytes") == str(64 * MiB)
    if os.path.exists(os.path.join(cg.dirs["memory"], "memory.memsw.limit_in_bytes")):
        assert _read(cg, "memory", "memory.memsw.limit_in_bytes") == str(64 * MiB)
    else:
        assert _read(cg, "memory", "memory.swappiness") == "0"
    assert _read(cg, "pids", "pids.max") == "10"
    read_rules = _read(cg, "blkio", "blkio.throttle.read_bps_device").splitlines()
    write_rules = _read(cg, "blkio", "blkio.throttle.write_bps_device").splitlines()
    root = _devices.root_device()
    assert root is not None
    assert f"{root[0]}:{root[1]} {MiB}" in read_rules
    assert f"{root[0]}:{root[1]} {2 * MiB}" in write_rules
    assert driver.existing() == ["job"]


def test_unlimited_limits_write_the_unlimited_values(driver: v1.Driver) -> None:
    cg = driver.create("job", Limits(cpu=0, memory_bytes=0, io_read_bps=0, io_write_bps=0, pids=0))

    assert _read(cg, "cpu", "cpu.cfs_quota_us") == "-1"
    assert _read(cg, "memory", "memory.limit_in_bytes") == str(KERNEL_UNLIMITED_BYTES)
    assert _read(cg, "pids", "pids.max") == "max"
    assert _read(cg, "blkio", "blkio.throttle.read_bps_device") == ""
    assert _read(cg, "blkio", "blkio.throttle.write_bps_device") == ""


KNOB_FILES = (
    ("cpu", "cpu.cfs_quota_us"),
    ("memory", "memory.limit_in_bytes"),
    ("memory", "memory.memsw.limit_in_bytes"),
    ("memory", "memory.swappiness"),
    ("pids", "pids.max"),
    ("blkio", "blkio.throttle.read_bps_device"),
    ("blkio", "blkio.throttle.write_bps_device"),
)


@limit_moves
def test_a_cgroup_moved_to_other_limits_reads_as_one_made_with_them(
    driver: v1.Driver, now: Limits, to: Limits
) -> None:
    # A spare is made with the default limits and changed when a job asks for others. Raising
    # the memory limit must write memsw first (the kernel refuses memsw below the limit), and
    # lifting a throttle must remove its rule.
    moved = driver.create("moved", now)
    moved.change_limits(now, to)
    fresh = driver.create("fresh", to)

    for controller, filename in KNOB_FILES:
        if os.path.exists(os.path.join(fresh.dirs[controller], filename)):
            assert _read(moved, controller, filename) == _read(fresh, controller, filename)


def test_lifting_a_limit_whose_knob_has_no_unlimited_value_restores_the_parents(
    driver: v1.Driver,
) -> None:
    # Without swap accounting a memory limit sets swappiness 0, which has no "unlimited": a
    # lifted limit takes the value a new cgroup starts with, its parent's.
    table = {"memory_bytes": (Knob("memory", "memory.swappiness", v1._no_swap),)}
    cg = driver.create("job", Limits())
    parent = _read(cg, "memory", "../memory.swappiness")
    _kernfs.change_limits(table, UNLIMITED, LOW, cg.dirs)
    assert _read(cg, "memory", "memory.swappiness") == "0"

    _kernfs.change_limits(table, LOW, UNLIMITED, cg.dirs)

    assert _read(cg, "memory", "memory.swappiness") == parent != "0"


def test_keeping_the_limits_writes_nothing(driver: v1.Driver) -> None:
    cg = driver.create("job", DEFAULT_LIMITS)
    quota = os.path.join(cg.dirs["cpu"], "cpu.cfs_quota_us")
    _kernfs.write_text(quota, "12345")  # not what the limits say: a write would put it back

    cg.change_limits(DEFAULT_LIMITS, DEFAULT_LIMITS)

    assert _read(cg, "cpu", "cpu.cfs_quota_us") == "12345"


def test_a_process_added_in_the_child_is_in_every_hierarchy(
    driver: v1.Driver, spawn: Spawn
) -> None:
    cg = driver.create("job", Limits())
    proc = spawn(cg, "sleep", "100")

    assert cg.pids() == [proc.pid]
    with open(f"/proc/{proc.pid}/cgroup") as f:
        # Lines read "ID:controller[,controller...]:path".
        paths = {}
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            paths.update(dict.fromkeys(controllers.split(","), path))
    for controller in driver.mounts:
        assert paths[controller] == f"/{driver.parent}/job"


def test_kill_all_kills_forked_children_too(driver: v1.Driver, spawn: Spawn) -> None:
    cg = driver.create("job", Limits())
    proc = spawn(cg, "sh", "-c", "sleep 100 & sleep 100 & wait")
    eventually(lambda: len(cg.pids()) == 3, 5.0, "the shell and its two sleeps")

    cg.kill_all()

    assert cg.pids() == []
    assert proc.wait(timeout=5) == -9


def test_stats_measure_cpu_time_and_memory(driver: v1.Driver, spawn: Spawn) -> None:
    cg = driver.create("job", Limits())
    busy = (
        "import time\nx = b'x' * (16 << 20)\n"
        "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    )
    assert spawn(cg, sys.executable, "-c", busy).wait(timeout=30) == 0

    stats = cg.stats()
    # The loop burns 0.3 s of CPU time after joining the cgroup, however loaded the machine
    # is (the counter starts after the exec: the spawn helper's own CPU time is excluded).
    assert stats.cpu_seconds >= 0.3
    assert stats.peak_memory_bytes > 16 * MiB
    assert stats.oom_killed is False


def test_a_job_over_its_memory_limit_is_oom_killed_not_swapped(
    driver: v1.Driver, spawn: Spawn
) -> None:
    cg = driver.create("job", Limits(memory_bytes=32 * MiB))
    hog = "x = b'x' * (256 << 20)"

    assert spawn(cg, sys.executable, "-c", hog).wait(timeout=30) == -9
    assert cg.stats().oom_killed is True


def test_destroy_kills_removes_every_dir_and_is_idempotent(driver: v1.Driver, spawn: Spawn) -> None:
    cg = driver.create("job", Limits(pids=5))
    proc = spawn(cg, "sleep", "100")

    cg.destroy()

    assert proc.wait(timeout=5) == -9
    assert not any(os.path.exists(d) for d in cg.hierarchy_dirs)
    assert driver.existing() == []
    cg.destroy()


def test_existing_lists_every_job_and_remove_parent_waits_for_them(driver: v1.Driver) -> None:
    driver.create("a", Limits())
    driver.create("b", Limits())
    assert driver.existing() == ["a", "b"]

    driver.remove_parent()
    assert len(_parent_dirs(driver)) == len(set(driver.mounts.values()))

    driver.open("a").destroy()
    driver.open("b").destroy()
    driver.remove_parent()
    assert _parent_dirs(driver) == []
    driver.remove_parent()


def test_parent_dirs_finds_the_parent_in_any_hierarchy_until_it_is_removed(
    driver: v1.Driver,
) -> None:
    assert driver.parent_dirs() == []
    driver.create("a", Limits())
    assert sorted(driver.parent_dirs()) == _parent_dirs(driver)
    assert len(driver.parent_dirs()) == len(set(driver.mounts.values()))

    driver.open("a").destroy()
    driver.remove_parent()
    assert driver.parent_dirs() == []
    # Left behind in one hierarchy only (as a half-done clean-up would): still found.
    stray = os.path.join(driver.mounts["pids"], driver.parent)
    os.mkdir(stray)
    assert driver.parent_dirs() == [stray]
    driver.remove_parent()
    assert driver.parent_dirs() == []


def test_creating_an_existing_job_cgroup_fails_and_keeps_it(driver: v1.Driver) -> None:
    driver.create("job", Limits(pids=7))
    with pytest.raises(CgroupError, match="File exists"):
        driver.create("job", Limits())
    assert _read(driver.open("job"), "pids", "pids.max") == "7"


def test_a_throttle_rejected_on_another_disk_is_skipped(
    driver: v1.Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _devices.root_device()
    assert root is not None
    # No disk has minor 1048575 under major 1 (the ram driver), so the kernel refuses it.
    monkeypatch.setattr(_devices, "throttle_devices", lambda: [root, (1, 1048575)])
    cg = driver.create("job", Limits(io_read_bps=MiB))
    assert _read(cg, "blkio", "blkio.throttle.read_bps_device") == f"{root[0]}:{root[1]} {MiB}"


def test_a_throttle_rejected_on_the_root_disk_fails_and_cleans_up(
    driver: v1.Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_devices, "root_device", lambda: (1, 1048575))
    monkeypatch.setattr(_devices, "throttle_devices", lambda: [(1, 1048575)])
    with pytest.raises(CgroupError, match=r"blkio\.throttle\.read_bps_device"):
        driver.create("job", Limits(io_read_bps=MiB))
    assert driver.existing() == []


def test_invalid_names_are_refused(driver: v1.Driver) -> None:
    for name in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError):
            driver.open(name)
