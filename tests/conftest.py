"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._real_driver import Spawn, spawner


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start a process already placed in a cgroup, as the launcher does; killed at teardown."""
    yield from spawner()
