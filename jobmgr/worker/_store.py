"""Durable job records: one SQLite database (WAL mode) in the state dir.

Written at each state change, read once at start-up.  The record frame the launcher keeps at
the head of each job's output log (see _records) is the hand-off for what happens while no
server is connected; the worker folds it in here when it comes back.  A failed write (disk
full) is logged and the record kept in memory: SQLite's journal keeps the file consistent
either way.

A database that fails ``PRAGMA quick_check`` as it is opened (damaged on disk, cut short) is
moved aside, never deleted, with one log line, and a new one is made: every job's record is in
its log too, so the worker rebuilds the table from the logs.
"""

from __future__ import annotations

import datetime
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
    output_truncated INTEGER NOT NULL,
    request_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, started_at);
"""
_COLUMNS = (
    *("id", "argv", "owner", "limits", "state", "started_at", "ended_at", "exit_code"),
    *("signal", "oom_killed", "cpu_seconds", "peak_memory_bytes", "reason", "output_truncated"),
    "request_id",
)
DAMAGED_SUFFIX = ".damaged-"  # jobs.db.damaged-<UTC time>: a database moved aside


class JobStore:
    """The jobs table; every method is thread-safe."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        try:
            self._db = _open(path)
        except sqlite3.DatabaseError as exc:
            aside = _move_aside(path)
            log.error(
                "%s is damaged (%s): moved aside to %s; rebuilding the job records from the"
                " jobs' logs",
                path.name,
                exc,
                aside.name,
            )
            self._db = _open(path)

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


def _open(path: Path) -> sqlite3.Connection:
    """The database at ``path``, made if new, checked, in WAL mode, with today's schema."""
    # SQLite creates the file with the umask's mode (often 0644) and gives its WAL the
    # database's mode: made here first, it is private from its first byte.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        rows = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
        if rows != ["ok"]:
            lines = [line for row in rows for line in row.splitlines() if line.strip()]
            problems = [line for line in lines if not line.startswith("***")] or lines
            more = f", and {len(problems) - 1} more problems" if len(problems) > 1 else ""
            raise sqlite3.DatabaseError(f"PRAGMA quick_check: {problems[0]}{more}")
        # WAL with synchronous=NORMAL survives any process crash; only a power cut may lose
        # the last commits, never corrupt the file.
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        if "request_id" not in columns:  # a database made before request ids
            db.execute("ALTER TABLE jobs ADD COLUMN request_id TEXT NOT NULL DEFAULT ''")
    except BaseException:
        db.close()
        raise
    return db


def _move_aside(path: Path) -> Path:
    """Rename the database and its WAL and shared-memory files (a WAL left behind would be
    replayed into the new database) to ``<name>.damaged-<UTC time>``; the new name."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(path.name + DAMAGED_SUFFIX + stamp)
    for suffix in ("-wal", "-shm", ""):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(aside.with_name(aside.name + suffix))
    return aside


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
        s.request_id,
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
        request_id=row["request_id"],
    )
