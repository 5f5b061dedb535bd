"""The format of a job's output log on disk, and the index of where its output bytes sit.

Frame: 1 byte stream (1 = stdout, 2 = stderr, 0 = the job's record, see _records), 4 bytes
big-endian length, the bytes, and the length again (so a reader can walk back from the end,
and tell a frame that checks out from damage).
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
from collections.abc import Callable

from ._status import Stream

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
        if stream > Stream.STDERR or length > MAX_FRAME:
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
    return bool(stream <= Stream.STDERR and head_length == length)


# (a frame's file position, output bytes before it, output bytes in it) -> stop there?
_Stop = Callable[[int, int, int], bool]


class FrameIndex:
    """Where output bytes sit in one log: marks (file position, output offset) at frame
    boundaries, one every INDEX_STEP bytes of file, made as look-ups walk it. Frames run from
    a few bytes to 1 MiB, so a look-up walks frame headers; with the marks each log is walked
    once, and later look-ups walk at most INDEX_STEP bytes. Thread-safe: a log's readers
    share it."""

    def __init__(self) -> None:
        self._positions = [0]
        self._offsets = [0]
        self._lock = threading.Lock()

    def find_output(self, fd: int, offset: int, size: int) -> tuple[int, int] | None:
        """Where output byte ``offset`` is in the first ``size`` bytes of the file: the
        position of the frame holding it (``size`` when ``offset`` is all the output there
        is) and the output offset that frame starts at; None if there is less output."""
        with self._lock:
            at = bisect.bisect_right(self._offsets, offset) - 1
            start = self._positions[at], self._offsets[at]
        position, before = self._walk(fd, *start, size, lambda _p, o, n: n > 0 and o + n > offset)
        return (position, before) if position < size or before == offset else None

    def output_before(self, fd: int, position: int) -> int:
        """The output bytes before ``position``, a frame boundary."""
        with self._lock:
            at = bisect.bisect_right(self._positions, position) - 1
            start = self._positions[at], self._offsets[at]
        return self._walk(fd, *start, position, lambda p, _o, _n: p >= position)[1]

    def _walk(self, fd: int, position: int, out: int, size: int, stop: _Stop) -> tuple[int, int]:
        """Frame by frame from a boundary, up to ``size`` or the frame ``stop`` picks;
        returns where it ended and the output bytes before that."""
        while position + FRAME.size <= size:
            window = os.pread(fd, min(INDEX_WINDOW, size - position), position)
            at = 0
            while at + FRAME.size <= len(window):
                stream, length = FRAME.unpack_from(window, at)
                counted = length if stream in OUTPUT_STREAMS else 0
                if stop(position + at, out, counted):
                    return position + at, out
                self._mark(position + at, out)
                at += OVERHEAD + length
                out += counted
            if at == 0:
                raise OSError(f"output log {fd} is shorter than its committed size")
            position += at
        return position, out

    def _mark(self, position: int, out: int) -> None:
        if position >= self._positions[-1] + INDEX_STEP:
            with self._lock:
                if position >= self._positions[-1] + INDEX_STEP:
                    self._positions.append(position)
                    self._offsets.append(out)
