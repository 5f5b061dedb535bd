"""Waiting for a condition: every wait of the harness, the steps and the tests goes through here,
so one place decides how often to look and how a timeout reads."""

from __future__ import annotations

import time
from collections.abc import Callable

from .speed import scaled

INTERVAL = 0.02


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds or ``timeout`` seconds pass; whether it held. ``timeout``
    is for the reference host: it is scaled by this machine's measured slowness."""
    deadline = time.monotonic() + scaled(timeout)
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(INTERVAL)
    return True


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    if not wait_until(check, timeout):
        raise AssertionError(f"timed out after {scaled(timeout):.3g}s waiting for {what}")
