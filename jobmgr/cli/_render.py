"""How jobmgr-client shows jobs: a status summary, JSON for scripts, the list table.

A job's state is jobmgr's (``JobStatus.state``, from the wire's ``state`` field), never the
reference's ``status`` field, which says only RUNNING or EXITED.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from jobmgr.client._types import JobStatus, Limits

from ._units import human_bytes

LIMIT_NAMES = ("cpu", "memory_bytes", "io_read_bps", "io_write_bps", "pids", "disk_bytes")


def summary(job: JobStatus) -> str:
    """A job's status for people, one ``name: value`` line per field."""
    lines = [
        ("job", job.id),
        ("command", command(job)),
        ("owner", job.owner or "-"),
        ("state", outcome(job)),
        ("started", _time(job.started_at)),
    ]
    if job.ended_at is not None:
        lines.append(("ended", _time(job.ended_at)))
    lines.append(("cpu time", f"{job.cpu_seconds:.2f} s"))
    lines.append(("peak memory", human_bytes(job.peak_memory_bytes)))
    lines.append(("limits", _limits(job.limits)))
    if job.reason:
        lines.append(("reason", job.reason))
    if job.output_truncated:
        lines.append(("output", "truncated: the server kept only the start of it"))
    return "\n".join(f"{name + ':':<13}{value}" for name, value in lines)


def outcome(job: JobStatus) -> str:
    """How the job stands or ended: ``EXITED with code 3``, ``STOPPED by signal 15``."""
    words = [job.state.value]
    if job.exit_code is not None:
        words.append(f"with code {job.exit_code}")
    elif job.signal:
        words.append(f"by signal {job.signal}")
    if job.oom_killed:
        words.append("(out of memory)")
    return " ".join(words)


def as_json(job: JobStatus) -> dict[str, Any]:
    """A job's fields for scripts: terminated once it has ended, however it ended (not the
    API's narrower field 2); exit_code only when it exited by itself; epoch seconds."""
    return {
        "id": job.id,
        "state": job.state.value,
        "terminated": job.ended,
        "exit_code": job.exit_code,
        "signal": job.signal,
        "oom_killed": job.oom_killed,
        "argv": argv(job),
        "argv_abbreviated": job.argv_abbreviated,
        "owner": job.owner,
        "started_at": job.started_at.timestamp() if job.started_at else None,
        "ended_at": job.ended_at.timestamp() if job.ended_at else None,
        "cpu_seconds": job.cpu_seconds,
        "peak_memory_bytes": job.peak_memory_bytes,
        "limits": {name: getattr(job.limits, name) for name in LIMIT_NAMES},
        "reason": job.reason,
        "output_truncated": job.output_truncated,
    }


def table(jobs: Iterable[JobStatus]) -> str:
    """The jobs as aligned columns under a header line."""
    rows = [("ID", "STATE", "EXIT", "OWNER", "STARTED", "COMMAND")]
    rows += [
        (job.id, job.state.value, _exit_column(job), job.owner or "-", _time(job.started_at),
         command(job))
        for job in jobs
    ]  # fmt: skip
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def argv(job: JobStatus) -> list[str]:
    """The job's argv for display: bytes that are not UTF-8 shown as \\xNN escapes."""
    return [
        arg.encode(errors="surrogateescape").decode(errors="backslashreplace") for arg in job.argv
    ]


def command(job: JobStatus) -> str:
    """The command as a shell would read it; "..." ends one the server abbreviated."""
    shown = shlex.join(argv(job))
    return shown + " ..." if job.argv_abbreviated else shown


def _exit_column(job: JobStatus) -> str:
    if job.exit_code is not None:
        return str(job.exit_code)
    return f"sig {job.signal}" if job.signal else "-"


def _time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().isoformat(sep=" ", timespec="seconds")


def _limits(limits: Limits) -> str:
    """The limits in force, in words; 0 (or unset) means unlimited."""

    def rate(value: int | None) -> str:
        return f"{human_bytes(value)}/s" if value else "unlimited"

    words = [
        f"cpu {limits.cpu:g}" if limits.cpu else "cpu unlimited",
        f"memory {human_bytes(limits.memory_bytes)}" if limits.memory_bytes else "memory unlimited",
        f"io read {rate(limits.io_read_bps)}",
        f"io write {rate(limits.io_write_bps)}",
        f"pids {limits.pids}" if limits.pids else "pids unlimited",
    ]
    if limits.disk_bytes:
        words.append(f"disk {human_bytes(limits.disk_bytes)}")
    return ", ".join(words)
