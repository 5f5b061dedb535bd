"""Rows of the result table, the statistics behind them, and how the table is printed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MB = 1_000_000
MiB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its baseline from the same run, and its target.

    ``passed`` is None for rows that only inform (such as a p99 the issue asks to report).
    """

    name: str
    value: float
    unit: str
    baseline: float | None
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _finite(self.value),
            "unit": self.unit,
            "baseline": _finite(self.baseline),
            "ratio": _finite(self.ratio),
            "target": self.target,
            "pass": self.passed,
        }


def ratio_row(
    name: str,
    value: float,
    unit: str,
    baseline: float,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    note: str = "",
) -> Row:
    """A row judged on value / baseline against an upper or a lower bound."""
    ratio = value / baseline if baseline else math.inf
    if at_most is not None:
        return Row(
            name, value, unit, baseline, ratio, f"ratio <= {at_most:g}", ratio <= at_most, note
        )
    if at_least is not None:
        return Row(
            name, value, unit, baseline, ratio, f"ratio >= {at_least:g}", ratio >= at_least, note
        )
    return Row(name, value, unit, baseline, ratio, "report", None, note)


def limit_row(name: str, value: float, unit: str, *, at_most: float, note: str = "") -> Row:
    """A row judged on its absolute value (no baseline)."""
    return Row(name, value, unit, None, None, f"<= {at_most:g} {unit}", value <= at_most, note)


def failed_row(name: str, unit: str, target: str, error: str) -> Row:
    """A row whose measurement could not be made."""
    return Row(name, math.nan, unit, None, None, target, False, f"error: {error}")


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def format_table(rows: Sequence[Row]) -> str:
    header = ("figure", "value", "unit", "baseline", "ratio", "target", "pass")
    lines = [
        (
            row.name,
            _num(row.value),
            row.unit,
            _num(row.baseline),
            _num(row.ratio),
            row.target,
            {True: "PASS", False: "FAIL", None: "-"}[row.passed],
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        for cells in [header, *lines]
    ]
    out.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {row.name}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _finite(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, 6)
