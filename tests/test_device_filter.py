"""The cgroup v2 device filter, against the real kernel: a hybrid host (cgroup v1 for the
controllers) still mounts cgroup2, and the kernel asks the device programs attached to a
process's cgroup2 cgroup on every open and mknod, whatever the v1 hierarchies say."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobmgr.worker.cgroups import JOB_DEVICES, Device
from jobmgr.worker.cgroups._device_bpf import attach, attached, program
from jobmgr.worker.cgroups._mounts import read_mounts


def cgroup2_mount() -> str | None:
    mounts = [m for m in read_mounts("/proc/self/mountinfo") if m.fstype == "cgroup2"]
    return mounts[0].mount_point if mounts else None


@pytest.fixture
def cgroup2_dir() -> Iterator[Path]:
    root = cgroup2_mount()
    if root is None:
        pytest.skip("no cgroup2 filesystem is mounted")
    path = Path(root) / f"jobmgr-test-devices-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def opens(cgroup: Path, *paths: str) -> dict[str, str]:
    """Which of ``paths`` a shell moved into ``cgroup`` can open for reading."""
    script = f"echo $$ > {cgroup}/cgroup.procs; " + "; ".join(
        f"if head -c1 {p} >/dev/null 2>&1; then echo {p} ok; else echo {p} refused; fi"
        for p in paths
    )
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    return dict(line.split() for line in done.stdout.splitlines())


def test_the_program_allows_exactly_the_listed_devices_and_is_what_the_verifier_accepts(
    cgroup2_dir: Path, tmp_path: Path
) -> None:
    host_disk = str(tmp_path / "disk")  # a node for the disk holding /, made here
    os.mknod(host_disk, 0o600 | stat.S_IFBLK, os.stat("/").st_dev)
    assert attached(str(cgroup2_dir)) == 0
    attach(str(cgroup2_dir), JOB_DEVICES)
    assert attached(str(cgroup2_dir)) == 1
    seen = opens(cgroup2_dir, "/dev/null", "/dev/zero", "/dev/urandom", host_disk, "/dev/mem")
    assert seen == {
        "/dev/null": "ok",
        "/dev/zero": "ok",
        "/dev/urandom": "ok",
        host_disk: "refused",
        "/dev/mem": "refused",
    }


def test_a_device_with_any_minor_matches_every_minor() -> None:
    code = program((Device("c", 136, None, "pts/*"),))
    # 4 loads, then type and major compared (no minor), allow, then deny: 10 instructions.
    assert len(code) == 10 * 8
    code = program((Device("c", 1, 3, "null"),))
    assert len(code) == 11 * 8
