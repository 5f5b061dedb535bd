"""Fixtures for the scenarios that drive the worker library in this process."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cgroups import parent_dirs, remove_all
from jobmgr.worker import Sandbox, Worker


@pytest.fixture
def cgroup_parent(worker_id: str) -> str:
    return f"jobmgr-test-{worker_id}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker_sandbox() -> Sandbox:
    """The sandbox of the scenario's worker: the default (a module may override it)."""
    return Sandbox()


MakeWorker = Callable[..., tuple[Worker, str]]


@pytest.fixture
def make_worker(
    tmp_path: Path, cgroup_parent: str, worker_sandbox: Sandbox
) -> Iterator[MakeWorker]:
    """Workers, each with a state dir and cgroup parent of its own (the first: ``state`` and
    ``cgroup_parent``), made with Worker's keyword ``options``; returns the worker and its
    parent. After the test every launcher must have exited and no cgroup of theirs be left."""
    made: list[tuple[Worker, str, subprocess.Popen[bytes] | None]] = []

    def make(**options: Any) -> tuple[Worker, str]:
        n = len(made)
        parent = f"{cgroup_parent}-{n}" if n else cgroup_parent
        options = {"default_grace": 2.0, "sandbox": worker_sandbox, **options}
        worker = Worker(tmp_path / f"state{n or ''}", cgroup_parent=parent, **options)
        made.append((worker, parent, worker._launcher.process))
        return worker, parent

    yield make
    try:
        for worker, _, _ in made:
            worker.close()
    finally:
        leaked = {parent: parent_dirs(parent) for _, parent, _ in made}
        for parent, dirs in leaked.items():
            if dirs:
                remove_all(parent)
    launchers = [launcher for _, _, launcher in made]
    assert all(p is not None and p.poll() is not None for p in launchers), (
        "a launcher outlived its worker"
    )
    assert not any(leaked.values()), f"cgroups outlived their worker: {leaked}"


@pytest.fixture
def worker(make_worker: MakeWorker) -> Worker:
    """A Worker with its own state dir and cgroup parent (see make_worker)."""
    return make_worker()[0]
