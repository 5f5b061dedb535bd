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

from jobmgr.worker.cgroups import detect_driver
from jobmgr.worker.cgroups._mounts import read_mounts

from ._summary import BOOTED, REQUEST, SUMMARY, Request, Summary

SCRATCH_MOUNT = "/var/tmp"


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
    junit = results / "junit.xml"
    started = time.monotonic()
    code = subprocess.call(
        [
            sys.executable, "-m", "pytest",
            "-p", "no:cacheprovider",
            "-n", str(request.workers),
            "-v", "-rfEsxX",
            f"--junitxml={junit}",
            *request.targets,
            *request.pytest_args,
        ],
        env={**os.environ, "TMPDIR": SCRATCH_MOUNT, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    seconds = time.monotonic() - started
    _write(results, _summarise(junit, driver.version, options, seconds, code))
    return code


def _mount_scratch() -> None:
    disks = sorted(name for name in os.listdir("/sys/block") if name.startswith("vd"))
    if len(disks) != 1:
        raise SystemExit(f"vm guest: expected one virtio disk (the scratch disk), found {disks}")
    device = f"/dev/{disks[0]}"
    subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True)
    subprocess.run(["mount", "-t", "ext4", device, SCRATCH_MOUNT], check=True)
    os.chmod(SCRATCH_MOUNT, 0o1777)


def _summarise(junit: Path, version: int, options: str, seconds: float, code: int) -> Summary:
    failed: list[str] = []
    skipped: list[str] = []
    xfailed: list[str] = []
    names: list[str] = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            names.append(name)
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(name)
            elif (skip := case.find("skipped")) is not None:
                (xfailed if skip.get("type") == "pytest.xfail" else skipped).append(name)
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
    )


def _empty(version: int, options: str) -> Summary:
    return Summary(platform.release(), version, options, 0, 0, 0, [], [], [], 0.0, 3)


def _write(results: Path, summary: Summary) -> None:
    (results / SUMMARY).write_text(json.dumps(summary.to_json()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
