"""The launcher's timers: when to SIGKILL a job whose grace is over, when to kill an init that
did not end, when a job times out.

The loop sleeps in select() until the next one is due, so a timer costs nothing while it waits.
"""

from __future__ import annotations

import enum
import heapq
import time


class Deadline(enum.IntEnum):
    KILL = 1  # the grace period is over: the init SIGKILLs what is left
    FORCE = 2  # the init did not end after KILL: SIGKILL the init, and its namespace with it
    TIMEOUT = 3  # the job's timeout: stop it, with its grace


class Deadlines:
    """Deadlines of jobs, soonest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, Deadline, str]] = []

    def add(self, delay: float, kind: Deadline, job_id: str) -> None:
        """``kind`` falls due for job ``job_id`` in ``delay`` seconds."""
        heapq.heappush(self._heap, (time.monotonic() + delay, kind, job_id))

    def next_in(self) -> float | None:
        """Seconds until the next deadline (0 if one is due), None if there is none."""
        return max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None

    def due(self) -> list[tuple[Deadline, str]]:
        """Take the deadlines that have fallen due, soonest first."""
        now = time.monotonic()
        fired = []
        while self._heap and self._heap[0][0] <= now:
            _, kind, job_id = heapq.heappop(self._heap)
            fired.append((kind, job_id))
        return fired
