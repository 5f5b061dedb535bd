"""Capture times in a job's output log: time-mark frames.

A time mark is a frame of its own stream (TIME_STREAM) holding 8 bytes: the CLOCK_REALTIME
nanoseconds at which the launcher took the output that follows it from the job's pipes. The
launcher writes one before an output frame when the clock has moved MARK_INTERVAL or more
since the last mark, in the same system call as that frame; so a chunk's capture time is the
last mark before it: at most MARK_INTERVAL earlier than the launcher read it, never later.

Marks are additive: readers hand out only stdout and stderr and step over other frames, and
output offsets count output bytes only, so a log with marks reads as before. A log written
without them (by an older launcher) has no capture times: its chunks carry none.
"""

from __future__ import annotations

import struct
import time

TIME_STREAM = 3
MARK = struct.Struct("!q")  # a mark frame's data
# The whole frame, in the log's frame format (see _frames): stream, length, data, length.
MARK_FRAME = struct.Struct("!BIqI")  # 17 bytes
# Marks are this far apart at least: a fast job's chunks share one (at 1 GB/s, one mark per
# MiB of output), a slow job gets one per write it makes.
MARK_INTERVAL = 1_000_000  # ns


def mark_frame(when: int) -> bytes:
    """The frame saying that what follows was captured at ``when`` (ns since the epoch)."""
    return MARK_FRAME.pack(TIME_STREAM, MARK.size, when, MARK.size)


class TimeMarker:
    """Decides, output frame by output frame, whether a time mark goes before it."""

    def __init__(self) -> None:
        self._last = -MARK_INTERVAL

    def before_output(self) -> bytes:
        """The mark frame to write before the next output frame, or b"" when the last one
        still holds. Call it as the output is taken from the pipe."""
        now = time.time_ns()
        if now - self._last < MARK_INTERVAL and now >= self._last:
            return b""
        self._last = now
        return mark_frame(now)
