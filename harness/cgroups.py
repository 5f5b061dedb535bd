"""A job's cgroups as the cgroup driver sees them, on whichever cgroup version this machine runs.

Nothing here builds a /sys/fs/cgroup path or asks which version it got to find one: the driver
(``jobmgr.worker.cgroups.detect_driver``) says where a parent and a job's cgroup are, so a check
made here looks at the same directories the server made, on v1 and on v2 alike.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from jobmgr.worker.cgroups import CgroupError, detect_driver, v1, v2

# What a v1 kernel reads back for "-1" in memory.*limit_in_bytes: the page-aligned maximum.
KERNEL_UNLIMITED_BYTES = 9223372036854771712

# The controllers a job is limited and measured by, per version: what "every hierarchy" means.
JOB_CONTROLLERS = {1: v1.CONTROLLERS, 2: v2.CONTROLLERS}


def parent_dirs(parent: str) -> list[str]:
    """The directories of cgroup parent ``parent`` that exist now, in any hierarchy."""
    return detect_driver(parent).parent_dirs()


def job_names(parent: str) -> set[str]:
    """Names of the job cgroups (jobs and warm slots) under ``parent``, in any hierarchy."""
    return set(detect_driver(parent).existing())


def job_dirs(parent: str, job: str) -> list[str]:
    """The directories of job ``job``'s cgroup that exist now, the ones its limits are on: one
    per hierarchy under v1, a single one under v2."""
    dirs = [os.path.join(directory, job) for directory in detect_driver(parent).parent_dirs()]
    return [path for path in dirs if os.path.isdir(path)]


def job_procs_dirs(parent: str, job: str) -> list[str]:
    """The directories job ``job``'s processes are placed in (where its cgroup.procs files
    are) that exist now: its own directory in each hierarchy under v1, a child of it under
    v2."""
    cgroup = detect_driver(parent).open(job)
    dirs = sorted({os.path.dirname(path) for path in cgroup.procs_files})
    return [path for path in dirs if os.path.isdir(path)]


def job_pids(parent: str, job: str) -> list[int]:
    """Host PIDs of every process in job ``job``'s cgroup."""
    return detect_driver(parent).open(job).pids()


def job_file(parent: str, job: str, *names: str) -> Path:
    """The first of ``names`` that one of the job's cgroup directories holds. A file named
    differently by each version is given once for each (``"memory.limit_in_bytes",
    "memory.max"``); one named alike (``"pids.current"``) once."""
    for name in names:
        for directory in job_dirs(parent, job):
            path = Path(directory, name)
            if path.exists():
                return path
    raise FileNotFoundError(f"no {' or '.join(names)} in the cgroup of job {job} under {parent}")


def job_controllers(parent: str) -> tuple[str, ...]:
    """The controllers the driver for ``parent`` places every job under."""
    return JOB_CONTROLLERS[detect_driver(parent).version]


def placement(pid: int, controllers: tuple[str, ...]) -> dict[str, str]:
    """Controller -> the cgroup ``pid`` is in for it, as the kernel lists it in
    /proc/<pid>/cgroup. A v1 hierarchy names its controllers; v2's single one (``0::``) holds
    every controller not in a v1 hierarchy."""
    named: dict[str, str] = {}
    unified = ""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hierarchy, names, path = line.split(":", 2)
        if hierarchy == "0" and not names:
            unified = path
        for name in names.split(","):
            named[name] = path
    return {c: named.get(c, unified) for c in controllers}


def remove_all(parent: str) -> None:
    """Kill whatever runs in a job cgroup under ``parent``, and remove them and the parent."""
    driver = detect_driver(parent)
    for job in driver.existing():
        with contextlib.suppress(CgroupError):
            driver.open(job).destroy()
    driver.remove_parent()
