"""How jobmgr-client shows jobs: a status summary, JSON for scripts, the list table."""

from __future__ import annotations

import datetime
import shlex
from collections.abc import Iterable
from typing import Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp

from jobmgr.api import job_pb2

from ._units import human_bytes

LimitName = Literal["cpu", "memory_bytes", "io_read_bps", "io_write_bps", "pids"]
LIMIT_NAMES: tuple[LimitName, ...] = ("cpu", "memory_bytes", "io_read_bps", "io_write_bps", "pids")


def state_name(job: job_pb2.StatusResponse) -> str:
    """The job's state in jobmgr's words: RUNNING, EXITED, STOPPED, FAILED or LOST.

    It comes from ``state``: the reference's ``status`` (field 1) says only RUNNING or EXITED.
    """
    try:
        return job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    except ValueError:  # a state this client does not know yet
        return f"UNKNOWN ({job.state})"


def ended(job: job_pb2.StatusResponse) -> bool:
    """Whether the job has ended, however it ended."""
    return job.state != job_pb2.JOB_STATE_RUNNING


def exited(job: job_pb2.StatusResponse) -> bool:
    """Whether the job's process ended by exiting, so that its exit code says how it went:
    every EXITED job, and a STOPPED one that exited on the SIGTERM (exit_code is -1 for a
    job that did not exit by itself)."""
    return ended(job) and job.exit_code >= 0


def summary(job: job_pb2.StatusResponse) -> str:
    """A job's status for people, one ``name: value`` line per field."""
    lines = [
        ("job", job.uuid),
        ("command", command(job)),
        ("owner", job.owner or "-"),
        ("state", outcome(job)),
        ("started", _time(job.started_at) if job.HasField("started_at") else "-"),
    ]
    if job.HasField("ended_at"):
        lines.append(("ended", _time(job.ended_at)))
    lines.append(("cpu time", f"{job.cpu_seconds:.2f} s"))
    lines.append(("peak memory", human_bytes(job.peak_memory_bytes)))
    lines.append(("limits", _limits(job.limits)))
    if job.reason:
        lines.append(("reason", job.reason))
    if job.output_truncated:
        lines.append(("output", "truncated: the server kept only the start of it"))
    return "\n".join(f"{name + ':':<13}{value}" for name, value in lines)


def outcome(job: job_pb2.StatusResponse) -> str:
    """How the job stands or ended: ``EXITED with code 3``, ``STOPPED by signal 15``."""
    words = [state_name(job)]
    if exited(job):
        words.append(f"with code {job.exit_code}")
    elif job.signal:
        words.append(f"by signal {job.signal}")
    if job.oom_killed:
        words.append("(out of memory)")
    return " ".join(words)


def as_json(job: job_pb2.StatusResponse) -> dict[str, Any]:
    """A job's fields for scripts: terminated once it has ended, however it ended (not the
    API's narrower field 2); exit_code only when it exited by itself; epoch seconds."""
    return {
        "id": job.uuid,
        "state": state_name(job),
        "terminated": ended(job),
        "exit_code": job.exit_code if exited(job) else None,
        "signal": job.signal or None,
        "oom_killed": job.oom_killed,
        "argv": argv(job),
        "argv_abbreviated": job.argv_abbreviated,
        "owner": job.owner,
        "started_at": _epoch(job.started_at) if job.HasField("started_at") else None,
        "ended_at": _epoch(job.ended_at) if job.HasField("ended_at") else None,
        "cpu_seconds": job.cpu_seconds,
        "peak_memory_bytes": job.peak_memory_bytes,
        "limits": {
            name: getattr(job.limits, name) if job.limits.HasField(name) else None
            for name in LIMIT_NAMES
        },
        "reason": job.reason,
        "output_truncated": job.output_truncated,
    }


def table(jobs: Iterable[job_pb2.StatusResponse]) -> str:
    """The jobs as aligned columns under a header line."""
    rows = [("ID", "STATE", "EXIT", "OWNER", "STARTED", "COMMAND")]
    rows += [
        (
            job.uuid,
            state_name(job),
            _exit_column(job),
            job.owner or "-",
            _time(job.started_at) if job.HasField("started_at") else "-",
            command(job),
        )
        for job in jobs
    ]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def argv(job: job_pb2.StatusResponse) -> list[str]:
    """The job's argv for display: bytes that are not UTF-8 shown as \\xNN escapes."""
    if job.argv_bytes:
        return [arg.decode(errors="backslashreplace") for arg in job.argv_bytes]
    return list(job.argv)


def command(job: job_pb2.StatusResponse) -> str:
    """The command as a shell would read it; "..." ends one the server abbreviated."""
    shown = shlex.join(argv(job))
    return shown + " ..." if job.argv_abbreviated else shown


def _exit_column(job: job_pb2.StatusResponse) -> str:
    if exited(job):
        return str(job.exit_code)
    return f"sig {job.signal}" if job.signal else "-"


def _epoch(stamp: Timestamp) -> float:
    return float(stamp.seconds) + stamp.nanos / 1e9


def _time(stamp: Timestamp) -> str:
    moment = datetime.datetime.fromtimestamp(_epoch(stamp)).astimezone()
    return moment.isoformat(sep=" ", timespec="seconds")


def _limits(limits: job_pb2.Limits) -> str:
    """The limits in force, in words; 0 (or unset) means unlimited."""

    def rate(value: int) -> str:
        return f"{human_bytes(value)}/s" if value else "unlimited"

    words = [
        f"cpu {limits.cpu:g}" if limits.cpu else "cpu unlimited",
        f"memory {human_bytes(limits.memory_bytes)}" if limits.memory_bytes else "memory unlimited",
        f"io read {rate(limits.io_read_bps)}",
        f"io write {rate(limits.io_write_bps)}",
        f"pids {limits.pids}" if limits.pids else "pids unlimited",
    ]
    return ", ".join(words)
