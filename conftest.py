"""Fixtures for the acceptance suite live in steps/fixtures_*.py; this file wires them in."""

# Before anything imports grpc: jobmgr.api sets the TLS 1.3 floor, which grpc reads only once.
import pytest

import jobmgr.api  # noqa: F401

pytest_plugins = [
    "steps.fixtures_worker",
    "steps.fixtures_pki",
    "steps.fixtures_server",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A scenario tagged @known_gap states a promise not kept yet (each is in SECURITY.md):
    it must keep failing until it is mended, and then the tag must go."""
    for item in items:
        if item.get_closest_marker("known_gap"):
            item.add_marker(pytest.mark.xfail(reason="known gap, see SECURITY.md", strict=True))
