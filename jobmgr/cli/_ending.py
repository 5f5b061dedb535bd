"""The one line ``jobmgr-client run`` writes last on stderr: what became of the job.

Every way ``run`` can end writes exactly one such line, after all of the job's output, in one
form that a script can grep for (``^jobmgr-client: job ``)::

    jobmgr-client: job ID HOW[: WHY]

ID is the job id's first 8 hex digits (enough to name it: commands take a unique prefix), or
nothing when no job was made. HOW is one of:

    exited with code N                  it ended by itself
    killed by signal N (NAME)           a signal nobody asked for ended it
    OOM-killed by signal 9 (SIGKILL)    it outgrew its memory limit
    stopped by signal N (NAME)          a stop (ours, someone's, its timeout) ended it ...
    stopped, exited with code N         ... or it exited on the stop's SIGTERM
    lost                                its supervisor died; no exit status is known
    failed to start                     no job runs (not found, not executable, refused, ...)
    detached, still running             Ctrl-C left it running
    unknown, may still be running       the server stayed away for longer than we wait

WHY, when there is one, is the server's reason (its timeout, the OOM killer, a lost
launcher) or what made ``run`` stop the job (its stdout closed, a signal to it, Ctrl-C).
With ``--quiet`` the line is left out for the first two (the job ended by itself, and its
exit status says how), so that a script reading the job's stderr gets exactly the job's.
"""

from __future__ import annotations

import os
import signal
import sys

from jobmgr.client._types import JobState, JobStatus

PREFIX = "jobmgr-client: job "
SHORT_ID = 8  # hex digits of a job id shown: 2**32 ids before two are alike


def how(status: JobStatus) -> str:
    """HOW a job that has ended ended (see the module docstring)."""
    if status.state is JobState.EXITED:
        return f"exited with code {status.exit_code}"
    if status.state is JobState.LOST:
        return "lost"
    if status.state is JobState.STOPPED:
        if status.exit_code is not None:
            return f"stopped, exited with code {status.exit_code}"
        return f"stopped by {_signal(status.signal)}"
    if status.oom_killed:
        return f"OOM-killed by {_signal(status.signal)}"
    return f"killed by {_signal(status.signal)}"


def by_itself(status: JobStatus) -> bool:
    """Whether the job ended on its own: its exit status alone says how (``--quiet``)."""
    return status.state is JobState.EXITED or (
        status.state is JobState.FAILED and not status.oom_killed
    )


def ended(status: JobStatus, *, why: str = "", quiet: bool = False) -> None:
    """The line for a job that has ended; ``why`` (what we did to it) over its reason."""
    if quiet and by_itself(status):
        return
    tell(status.id, how(status), why or status.reason)


def not_started(why: str) -> None:
    tell("", "failed to start", why)


def tell(job_id: str, how: str, why: str = "") -> None:
    """Write the ending line, on a line of its own even if the job's last line was cut."""
    named = f"{job_id[:SHORT_ID]} " if job_id else ""
    line = f"{PREFIX}{named}{how}" + (f": {why}" if why else "")
    sys.stderr.write(("\n" if _mid_line() else "") + line + "\n")
    sys.stderr.flush()


# The last byte the job's output put on our stderr, and on our stdout: the line starts a
# line of its own when either left one open on the same file (a terminal, `2>&1`).
last_bytes = {"stdout": b"\n", "stderr": b"\n"}


def _mid_line() -> bool:
    if last_bytes["stderr"] != b"\n":
        return True
    return last_bytes["stdout"] != b"\n" and _same_file(sys.stdout, sys.stderr)


def _same_file(one: object, other: object) -> bool:
    try:
        a, b = os.fstat(one.fileno()), os.fstat(other.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev)


def _signal(number: int | None) -> str:
    if not number:
        return "a signal"
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"
