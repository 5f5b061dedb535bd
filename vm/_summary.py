"""What the host and the guest share: the request, the summary, and the names of both."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REQUEST = "request.json"
BOOTED = "booted"  # written first thing in the guest: seconds since the kernel started
SUMMARY = "summary.json"
HOST_TAG = "jobmgr-host"  # the 9p tag under which the host's root is shared a second time


@dataclass(frozen=True)
class Request:
    """Which tests to run in the guest, and how."""

    targets: list[str]
    pytest_args: list[str] = field(default_factory=list)
    workers: int = 2
    nsdelegate_targets: list[str] = field(default_factory=list)
    """Run again once cgroup2 is remounted with nsdelegate (virtme-ng mounts it without)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        return cls(**data)


@dataclass(frozen=True)
class Summary:
    """One guest run: which cgroup driver the kernel got, and what the tests did."""

    kernel: str
    driver_version: int
    cgroup2_options: str  # the cgroup2 mount's options, e.g. "rw,nsdelegate"
    scenarios: int  # tests under steps/ (one per scenario of a feature file)
    tests: int  # every test that ran, scenarios included
    passed: int
    failed: list[str]
    skipped: list[str]
    xfailed: list[str]
    seconds: float
    pytest_exit: int
    figures: list[str] = field(default_factory=list)  # what the tests measured (JUnit properties)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(**data)

    def describe(self) -> str:
        """One line for the log: the driver, and how many kernel-facing tests ran."""
        return (
            f"cgroup v{self.driver_version} driver on Linux {self.kernel} (cgroup2 "
            f"{self.cgroup2_options}): {self.tests} kernel-facing tests ran in "
            f"{self.seconds:.0f} s ({self.scenarios} feature scenarios): {self.passed} passed, "
            f"{len(self.failed)} failed, {len(self.skipped)} skipped, "
            f"{len(self.xfailed)} expected failures (known gaps)"
        )

    def problems(self) -> list[str]:
        """Why this run does not count as a pass; empty when it does."""
        found = []
        if self.driver_version != 2:
            found.append(f"the cgroup v{self.driver_version} driver ran, not v2")
        if self.tests == 0:
            found.append("no test ran")
        found += [f"{name} failed" for name in self.failed]
        # A kernel-facing test skipped in the VM did not meet the kernel it was written for.
        found += [f"{name} was skipped" for name in self.skipped]
        if self.pytest_exit not in (0, 5) and not self.failed:
            found.append(f"pytest exited {self.pytest_exit}")
        return found
