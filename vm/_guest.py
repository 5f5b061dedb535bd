"""Runs inside the test VM (``vng --exec``): check the cgroup setup, run the suite, summarise.

    python -m vm._guest RESULTS_DIR

RESULTS_DIR is shared with the host (9p, read-write): ``request.json`` says what to run;
``booted``, ``junit.xml`` and ``summary.json`` are written back. The scratch disk (the one
virtio disk) is formatted and mounted on /var/tmp, which also holds the tests' temporary
directories: the I/O scenarios then meet a real block device, and the state directories sit
on a disk as they do in production rather than in the VM's RAM.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from harness import speed
from jobmgr.worker.cgroups import detect_driver
from jobmgr.worker.cgroups._mounts import read_mounts, unescaped

from ._host import CHECKOUT
from ._summary import BOOTED, HOST_TAG, REQUEST, SUMMARY, Request, Summary

HOST_CACHED = "/run/jobmgr-host"

SCRATCH_MOUNT = "/var/tmp"
SWAP_SIZE = "512M"
# pytest-timeout's limit for one test on the reference host (pyproject.toml's `timeout`),
# scaled by the guest's speed but never past TEST_TIMEOUT_CAP: a hung test then fails alone
# and the rest still run (the slowest, a 5 GiB output, takes 530-760 s under emulation).
TEST_TIMEOUT = 300.0
TEST_TIMEOUT_CAP = 1200.0


def main(argv: list[str]) -> int:
    results = Path(argv[0])
    uptime = Path("/proc/uptime").read_text().split()[0]
    (results / BOOTED).write_text(f"{float(uptime):.1f}\n")
    request = Request.from_json(json.loads((results / REQUEST).read_text()))
    driver = detect_driver("jobmgr-vm-probe")
    options = ",".join(
        sorted(o for m in read_mounts("/proc/self/mountinfo") if m.fstype == "cgroup2"
               for o in m.super_options)
    )  # fmt: skip
    print(
        f"vm guest: cgroup v{driver.version} driver; cgroup2 mounted {options or 'nowhere'}",
        flush=True,
    )
    if driver.version != 2:
        _write(results, _empty(driver.version, options))
        return 3
    _mount_scratch()
    _enter_cached_root()
    # Measured once here, on a quiet machine, and handed to every pytest worker: they would
    # otherwise each measure it while the others are busy.
    factor = speed.factor()
    print(f"vm guest: machine speed factor {factor:.1f} (timing bounds scale by it)", flush=True)
    started = time.monotonic()
    code = _pytest(request, request.targets, results / "junit.xml")
    junits = [results / "junit.xml"]
    if request.nsdelegate_targets and not request.pytest_args:
        # The same kernel with namespaces as delegation boundaries, as systemd mounts it.
        subprocess.run(["mount", "-o", "remount,nsdelegate", "/sys/fs/cgroup"], check=True)
        junits.append(results / "junit-nsdelegate.xml")
        again = _pytest(request, request.nsdelegate_targets, junits[-1])
        code = code or again
    seconds = time.monotonic() - started
    _write(results, _summarise(junits, driver.version, options, seconds, code))
    return code


def _pytest(request: Request, targets: list[str], junit: Path) -> int:
    return subprocess.call(
        [
            sys.executable, "-m", "pytest",
            "-p", "no:cacheprovider",
            "-n", str(request.workers),
            "-v", "-rfEsxX", "--durations=30",
            f"--timeout={min(speed.scaled(TEST_TIMEOUT), TEST_TIMEOUT_CAP):.0f}",
            f"--junitxml={junit}",
            *targets,
            *request.pytest_args,
        ],
        env={
            **os.environ,
            "TMPDIR": SCRATCH_MOUNT,
            "PYTHONDONTWRITEBYTECODE": "1",
            speed.OVERRIDE: f"{speed.factor():.2f}",
        },
    )  # fmt: skip


def _enter_cached_root() -> None:
    """Make a cached mount of the host's root the guest's root, with every mount moved along.

    vng's root caches nothing (9p cache=none): each lookup and stat is a round trip to qemu,
    3-7 ms under emulation, and a Python start takes 2-3 s. With cache=loose the same files
    start Python in 0.6 s. The host changes none of them while the VM runs. The guest's other
    mounts (proc, sys, cgroup2, dev, the writable overlays, the shared results directory, the
    scratch disk) are bound in the same places, so that nothing but the speed differs; and the
    root is pivoted, not chrooted, because a chrooted process may not make a user namespace.
    """
    os.makedirs(HOST_CACHED, exist_ok=True)
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    options = "ro,trans=virtio,version=9p2000.L,access=any,msize=524288,cache=loose"
    subprocess.run(["mount", "-t", "9p", "-o", options, HOST_TAG, HOST_CACHED], check=True)
    for point in _mount_points():
        if point not in ("/", HOST_CACHED) and not _under_host_files(point):
            target = f"{HOST_CACHED}{point}"
            subprocess.run(["mount", "--bind", point, target], check=True)
    os.chdir(HOST_CACHED)
    subprocess.run(["pivot_root", ".", "."], check=True)
    subprocess.run(["umount", "-l", "."], check=True)
    os.chdir(CHECKOUT)


def _under_host_files(point: str) -> bool:
    """Whether a mount point lies in what the cached root serves itself: the interpreter, the
    libraries and the checkout (vng lays writable overlays over /usr, which the tests never
    write)."""
    tops = (Path("/usr"), CHECKOUT, Path(sys.prefix).resolve())
    return any(Path(point).is_relative_to(top) for top in tops)


def _mount_points() -> list[str]:
    """This namespace's mount points, parents before children (mountinfo's order)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        fields = [line.split() for line in f]
    return [unescaped(f[4]) for f in fields]


def _mount_scratch() -> None:
    disks = sorted(name for name in os.listdir("/sys/block") if name.startswith("vd"))
    if len(disks) != 1:
        raise SystemExit(f"vm guest: expected one virtio disk (the scratch disk), found {disks}")
    device = f"/dev/{disks[0]}"
    subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True)
    subprocess.run(["mount", "-t", "ext4", device, SCRATCH_MOUNT], check=True)
    os.chmod(SCRATCH_MOUNT, 0o1777)
    # Some swap, so that memory.swap.max has something to hold a job back from.
    swap = os.path.join(SCRATCH_MOUNT, "vm-swap")
    subprocess.run(["fallocate", "-l", SWAP_SIZE, swap], check=True)
    os.chmod(swap, 0o600)
    subprocess.run(["mkswap", "-q", swap], check=True)
    subprocess.run(["swapon", swap], check=True)


def _summarise(
    junits: list[Path], version: int, options: str, seconds: float, code: int
) -> Summary:
    failed: list[str] = []
    skipped: list[str] = []
    xfailed: list[str] = []
    names: list[str] = []
    figures = [f"machine speed factor (timing bounds scale by it): {speed.factor():.1f}"]
    for junit in junits:
        if not junit.exists():
            continue
        suffix = " [nsdelegate]" if "nsdelegate" in junit.name else ""
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}{suffix}"
            names.append(name)
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(name)
            elif (skip := case.find("skipped")) is not None:
                (xfailed if skip.get("type") == "pytest.xfail" else skipped).append(name)
            for prop in case.iter("property"):
                figures.append(f"{prop.get('name')}: {prop.get('value')}{suffix}")
    return Summary(
        kernel=platform.release(),
        driver_version=version,
        cgroup2_options=options,
        scenarios=sum(1 for n in names if n.startswith("steps.")),
        tests=len(names),
        passed=len(names) - len(failed) - len(skipped) - len(xfailed),
        failed=failed,
        skipped=skipped,
        xfailed=xfailed,
        seconds=seconds,
        pytest_exit=code,
        figures=figures,
    )


def _empty(version: int, options: str) -> Summary:
    return Summary(platform.release(), version, options, 0, 0, 0, [], [], [], 0.0, 3)


def _write(results: Path, summary: Summary) -> None:
    (results / SUMMARY).write_text(json.dumps(summary.to_json()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
