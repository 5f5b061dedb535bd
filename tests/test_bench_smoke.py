"""The bench starts and writes its results; it is not run here (see `make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench._stats import Row, format_table, ratio_row
from harness.figures import percentile

REPO = Path(__file__).resolve().parent.parent
KEYS = {"name", "value", "unit", "baseline", "ratio", "target", "pass"}


def _bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_names_the_quick_mode_and_the_row_groups() -> None:
    result = _bench("--help")
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout
    assert "follow-latency" in result.stdout


def test_an_unknown_row_group_is_refused_before_anything_starts() -> None:
    result = _bench("--rows", "no-such-row")
    assert result.returncode == 2
    assert "no-such-row" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the bench runs jobmgr-server, which needs root")
def test_one_quick_row_group_runs_against_a_real_server_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = _bench("--quick", "--rows", "follow-latency", "--json", str(out))
    # 1 is a missed target (a busy test machine may miss one); 2 would be a broken bench.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    rows = json.loads(out.read_text())
    assert [row["name"] for row in rows] == ["follow latency median", "follow latency p99"]
    for row in rows:
        assert set(row) == KEYS
        assert row["value"] is not None and row["value"] > 0, result.stderr
    assert "follow latency median" in result.stdout


def test_ratio_rows_judge_against_their_bound() -> None:
    assert ratio_row("a", 3.0, "ms", 2.0, at_most=1.5).passed is True
    assert ratio_row("a", 4.0, "ms", 2.0, at_most=1.5).passed is False
    assert ratio_row("b", 1.0, "MB/s", 2.0, at_least=0.7).passed is False
    assert ratio_row("c", 1.0, "ms", 2.0).passed is None


def test_percentile_is_nearest_rank_and_the_table_shows_every_row() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 50) == 50.0
    table = format_table([Row("x", 1.0, "ms", None, None, "<= 2 ms", True, "a note")])
    assert "PASS" in table and "a note" in table
