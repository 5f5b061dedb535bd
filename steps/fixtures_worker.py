"""Fixtures for the scenarios that drive the worker library in this process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cgroups import parent_dirs
from jobmgr.worker import Sandbox, Worker


@pytest.fixture
def cgroup_parent(worker_id: str) -> str:
    return f"jobmgr-test-{worker_id}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker_sandbox() -> Sandbox:
    """The sandbox of the scenario's worker: the default (a module may override it)."""
    return Sandbox()


@pytest.fixture
def worker(tmp_path: Path, cgroup_parent: str, worker_sandbox: Sandbox) -> Iterator[Worker]:
    """A Worker with its own state dir and cgroup parent; after the scenario its launcher
    must have exited and no cgroup of the parent be left."""
    w = Worker(
        tmp_path / "state", cgroup_parent=cgroup_parent, default_grace=2.0, sandbox=worker_sandbox
    )
    launcher = w._launcher.process
    try:
        yield w
    finally:
        w.close()
    assert launcher is not None and launcher.poll() is not None, "the launcher outlived its worker"
    assert parent_dirs(cgroup_parent) == [], "cgroups outlived the worker"
