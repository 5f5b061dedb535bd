"""The format of a job's output log on disk, and the index of where its output bytes sit.

Frame: 1 byte stream (1 = stdout, 2 = stderr, 0 = the job's record, see _records, 3 = a
time mark, see _timemarks), 4 bytes big-endian length, the bytes, and the length again (so a
reader can walk back from the end, and tell a frame that checks out from damage).
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
from collections.abc import Callable

from ._status import Stream
from ._timemarks import MARK, TIME_STREAM

FRAME = struct.Struct("!BI")
TRAILER = struct.Struct("!I")
OVERHEAD = FRAME.size + TRAILER.size
RECORD_STREAM = 0
OUTPUT_STREAMS = frozenset({Stream.STDOUT, Stream.STDERR})
MAX_CHUNK = 1024 * 1024  # what a reader hands out at once; also the launcher's frame size cap
MAX_FRAME = 16 * 1024 * 1024  # no frame is longer (a record is far shorter): past it, damage
# Frames this large are read on their own (one copy fewer); smaller ones, which a launcher
# keeping up with a fast job writes (128-512 KiB), are merged with their neighbours, since a
# message per frame costs more than the copy: merged, a finished 1 GiB log streams about 1.5
# times as fast.
BIG_FRAME = 512 * 1024
# The frame index keeps a mark every INDEX_STEP bytes of file (1024 for a 1 GiB log). It
# walks headers a window at a time: one read covers thousands of small frames, and a big
# frame costs one read.
INDEX_STEP = 1024 * 1024
INDEX_WINDOW = 64 * 1024


def known_frame(stream: int, length: int) -> bool:
    """Whether a header names one of our streams with a length it can have."""
    if stream == TIME_STREAM:
        return length == MARK.size
    return stream <= Stream.STDERR and length <= MAX_FRAME


def frame(stream: Stream, data: bytes) -> list[bytes]:
    """The pieces to writev() to append ``data`` as one frame."""
    length = len(data)
    return [FRAME.pack(stream, length), data, TRAILER.pack(length)]


def seal(fd: int) -> int:
    """Make the log end on a whole frame after a crash, keeping every byte of output; the
    size of its whole frames.

    A frame cut short keeps the data it has: its header is rewritten with that length and its
    trailer added (its bytes left the job's pipe, so they exist nowhere else). A header cut
    short carries no data and is dropped. A log damaged before its end is left as it is."""
    size = os.fstat(fd).st_size
    pos = 0
    while pos + FRAME.size <= size:
        stream, length = FRAME.unpack(os.pread(fd, FRAME.size, pos))
        if not known_frame(stream, length):
            return size if _ends_whole(fd, size) else pos
        end = pos + OVERHEAD + length
        if end > size:
            have = min(length, size - pos - FRAME.size)
            if have <= 0 or stream not in OUTPUT_STREAMS:
                os.ftruncate(fd, pos)
                return pos
            os.pwrite(fd, FRAME.pack(stream, have), pos)
            os.ftruncate(fd, pos + FRAME.size + have)
            os.pwrite(fd, TRAILER.pack(have), pos + FRAME.size + have)
            return int(pos + OVERHEAD + have)
        (trailer,) = TRAILER.unpack(os.pread(fd, TRAILER.size, end - TRAILER.size))
        if trailer != length:
            return size if _ends_whole(fd, size) else pos
        pos = end
    if pos < size:
        os.ftruncate(fd, pos)  # a piece of a header: no data in it
    return pos


def _ends_whole(fd: int, size: int) -> bool:
    """Whether the last frame before ``size`` checks out, read back from its trailer."""
    if size < OVERHEAD:
        return False
    (length,) = TRAILER.unpack(os.pread(fd, TRAILER.size, size - TRAILER.size))
    start = size - OVERHEAD - length
    if start < 0:
        return False
    stream, head_length = FRAME.unpack(os.pread(fd, FRAME.size, start))
    return known_frame(stream, head_length) and head_length == length


# (a frame's file position, output bytes before it, output bytes in it, its time if it is a
# time mark) -> stop there?
_Stop = Callable[[int, int, int, int | None], bool]
# Where a walk is: a frame boundary, the output bytes before it, the last time mark before it.
Place = tuple[int, int, int | None]


class FrameIndex:
    """Where output bytes sit in one log: marks (file position, output offset, last capture
    time) at frame boundaries, one every INDEX_STEP bytes of file, made as look-ups walk it.
    Frames run from a few bytes to 1 MiB, so a look-up walks frame headers; with the marks
    each log is walked once, and later look-ups walk at most INDEX_STEP bytes. Thread-safe: a
    log's readers share it."""

    def __init__(self) -> None:
        self._places: list[Place] = [(0, 0, None)]
        self._lock = threading.Lock()

    def find_output(self, fd: int, offset: int, size: int) -> Place | None:
        """Where output byte ``offset`` is in the first ``size`` bytes of the file: the
        frame holding it (at ``size`` when ``offset`` is all the output there is), the output
        offset that frame starts at and the time it was captured; None if there is less
        output."""
        with self._lock:
            at = bisect.bisect_right([p[1] for p in self._places], offset) - 1
            start = self._places[at]
        place = self._walk(fd, start, size, lambda _p, o, n, _t: n > 0 and o + n > offset)
        return place if place[0] < size or place[1] == offset else None

    def find_time(self, fd: int, since: int, size: int) -> Place:
        """The first time mark at or after ``since`` (ns) in the first ``size`` bytes of the
        file, in log order; the end of them if there is none."""
        with self._lock:
            later = (i for i, p in enumerate(self._places) if p[2] is not None and p[2] >= since)
            start = self._places[max(next(later, len(self._places)) - 1, 0)]
        return self._walk(fd, start, size, lambda _p, _o, _n, t: t is not None and t >= since)

    def place(self, fd: int, position: int) -> Place:
        """The output bytes before ``position``, a frame boundary, and its capture time."""
        with self._lock:
            at = bisect.bisect_right([p[0] for p in self._places], position) - 1
            start = self._places[at]
        return self._walk(fd, start, position, lambda p, _o, _n, _t: p >= position)

    def _walk(self, fd: int, start: Place, size: int, stop: _Stop) -> Place:
        """Frame by frame from a boundary, up to ``size`` or the frame ``stop`` picks;
        returns where it ended, the output bytes and the last time mark before that."""
        position, out, when = start
        while position + FRAME.size <= size:
            window = os.pread(fd, min(INDEX_WINDOW, size - position), position)
            at = 0
            while at + FRAME.size <= len(window):
                stream, length = FRAME.unpack_from(window, at)
                counted = length if stream in OUTPUT_STREAMS else 0
                mark = _mark_time(fd, window, position + at, at) if stream == TIME_STREAM else None
                if stop(position + at, out, counted, mark):
                    return position + at, out, when
                self._note(position + at, out, when)
                at += OVERHEAD + length
                out += counted
                when = when if mark is None else mark
            if at == 0:
                raise OSError(f"output log {fd} is shorter than its committed size")
            position += at
        return position, out, when

    def _note(self, position: int, out: int, when: int | None) -> None:
        if position >= self._places[-1][0] + INDEX_STEP:
            with self._lock:
                if position >= self._places[-1][0] + INDEX_STEP:
                    self._places.append((position, out, when))


def _mark_time(fd: int, window: bytes, position: int, at: int) -> int:
    """The time in the time mark at file ``position`` (``at`` in ``window``)."""
    data = window[at + FRAME.size : at + FRAME.size + MARK.size]
    if len(data) < MARK.size:
        data = os.pread(fd, MARK.size, position + FRAME.size)
    (when,) = MARK.unpack(data)
    return int(when)
