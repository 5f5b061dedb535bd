"""The one interface every cgroup version implements; nothing above it knows the version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._spec import Limits
from ._device_rules import Device


@dataclass(frozen=True)
class CgroupStats:
    """What a job's cgroup measured."""

    cpu_seconds: float
    peak_memory_bytes: int
    oom_killed: bool


class JobCgroup(Protocol):
    """The cgroup (one directory per hierarchy under v1, one under v2) of one job."""

    name: str

    def change_limits(self, now: Limits, to: Limits) -> None:
        """Move the cgroup's limits from ``now`` (what it has: ``UNLIMITED`` when fresh) to
        ``to``, writing only what differs.

        The launcher makes a spare's cgroup with the server's default limits, warms it up,
        and changes them when a job that asked for others takes it over.
        """

    def allow_devices(self, devices: tuple[Device, ...]) -> None:
        """Let the cgroup's processes open and make only ``devices`` (see _device_rules); done
        as the cgroup is made, before any process joins it."""

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a process writes its pid into to join this cgroup (the
        launcher's forked child does so before it unshares and execs)."""

    @property
    def clone_dir(self) -> str | None:
        """The one directory a process can be cloned straight into (clone3 with
        CLONE_INTO_CGROUP: cgroup2 only); None under v1."""

    def pids(self) -> list[int]:
        """Host PIDs of every process in the cgroup."""

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, including ones forking meanwhile."""

    def stats(self) -> CgroupStats:
        """CPU time, peak memory and whether the OOM killer fired, read now."""

    def destroy(self) -> None:
        """Kill what is left and remove the cgroup; returns once it is gone."""


class CgroupDriver(Protocol):
    """Creates job cgroups under one parent (e.g. ``jobmgr``) of one cgroup version."""

    version: int
    parent: str

    def create(self, name: str, limits: Limits) -> JobCgroup:
        """Make the cgroup ``<parent>/<name>`` with these limits applied."""

    def open(self, name: str) -> JobCgroup:
        """The existing cgroup of job ``name`` (for stats or clean-up)."""

    def existing(self) -> list[str]:
        """Names of the job cgroups present under the parent."""

    def parent_dirs(self) -> list[str]:
        """The parent's directories that exist now, in whichever hierarchies: empty once
        ``remove_parent`` has removed it everywhere (what a clean-up check asks)."""

    def remove_parent(self) -> None:
        """Remove the parent if it has no job cgroups left (no error if it is busy or gone)."""
