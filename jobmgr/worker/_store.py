"""Durable job records: one SQLite database (WAL mode) in the state dir.

Written at each state change, read once at start-up.  The record frame the launcher keeps at
the head of each job's output log (see _records) is the hand-off for what happens while no
server is connected; the worker folds it in here when it comes back.  A failed write (disk
full) is logged and the record kept in memory: SQLite's journal keeps the file consistent
either way.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._spec import Limits
from ._status import JobState, JobStatus

log = logging.getLogger("jobmgr.worker")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    argv TEXT NOT NULL,
    owner TEXT NOT NULL,
    limits TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    exit_code INTEGER,
    signal INTEGER,
    oom_killed INTEGER NOT NULL,
    cpu_seconds REAL NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    reason TEXT NOT NULL,
    output_truncated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, started_at);
"""
_COLUMNS = (
    *("id", "argv", "owner", "limits", "state", "started_at", "ended_at", "exit_code"),
    *("signal", "oom_killed", "cpu_seconds", "peak_memory_bytes", "reason", "output_truncated"),
)


class JobStore:
    """The jobs table; every method is thread-safe."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        # SQLite creates the file with the umask's mode (often 0644) and gives its WAL the
        # database's mode: made here first, it is private from its first byte.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL with synchronous=NORMAL survives any process crash; only a power cut may lose
        # the last commits, never corrupt the file.
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def load(self) -> list[JobStatus]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs").fetchall()
        return [_from_row(row) for row in rows]

    def save(self, status: JobStatus) -> None:
        """Insert or replace the record of ``status.id``."""
        marks = ", ".join("?" for _ in _COLUMNS)
        self._write(
            f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES ({marks})",
            [_to_row(status)],
        )

    def delete(self, job_ids: Iterable[str]) -> None:
        self._write("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id in job_ids])

    def integrity_ok(self) -> bool:
        with self._lock:
            return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        try:
            with self._lock:
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            log.error("job records could not be saved (kept in memory only): %s", exc)


def _to_row(s: JobStatus) -> tuple[object, ...]:
    return (
        s.id,
        json.dumps(list(s.argv)),
        s.owner,
        json.dumps(s.limits.__dict__),
        s.state.value,
        s.started_at,
        s.ended_at,
        s.exit_code,
        s.signal,
        int(s.oom_killed),
        s.cpu_seconds,
        s.peak_memory_bytes,
        s.reason,
        int(s.output_truncated),
    )


def _from_row(row: Any) -> JobStatus:
    return JobStatus(
        id=row["id"],
        argv=tuple(json.loads(row["argv"])),
        owner=row["owner"],
        limits=Limits(**json.loads(row["limits"])),
        state=JobState(row["state"]),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        exit_code=row["exit_code"],
        signal=row["signal"],
        oom_killed=bool(row["oom_killed"]),
        cpu_seconds=row["cpu_seconds"],
        peak_memory_bytes=row["peak_memory_bytes"],
        reason=row["reason"],
        output_truncated=bool(row["output_truncated"]),
    )
