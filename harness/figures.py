"""Figures the suite and the bench measure: percentiles, and a figure printed beside a test's
result (shown with ``pytest -s`` or ``-rP``) for the tables in SECURITY.md."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with ``pct`` % of samples at or below it."""
    ordered = sorted(samples)
    assert ordered, "no samples"
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def report(line: str) -> None:
    """Print a measured figure, flushed, so that it shows even if the test then fails."""
    print(f"[measured] {line}", flush=True)
