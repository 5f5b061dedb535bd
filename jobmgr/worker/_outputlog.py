"""A job's output on disk: one append-only file of framed chunks, and followers reading it.

Frame: 1 byte stream (1 = stdout, 2 = stderr, 0 = the job's record, see _records), 4 bytes
big-endian length, the bytes, and the length again (so ``--tail`` can walk back from the end).
Readers hand out only stdout and stderr. One file for both streams keeps their true relative
order; the launcher appends whole frames and announces each new committed size, so readers
never see a partial frame.

Readers follow the file, not the job: each reads at its own pace from its own offset, and a
slow one costs the job and the other readers nothing.  New data wakes waiters directly (a
Condition for threads, futures for asyncio); nobody sleeps on a timer.

An output offset counts the bytes of stdout and stderr together, in the order the log holds
them (the order a whole read hands them out), record frames left out: the job's output as a
reader that took all of it has it. A reader may start at any such offset (``FrameIndex``).
"""

from __future__ import annotations

import asyncio
import bisect
import os
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from ._errors import OffsetPastEnd
from ._status import OutputChunk, Stream

FRAME = struct.Struct("!BI")
TRAILER = struct.Struct("!I")
OVERHEAD = FRAME.size + TRAILER.size
RECORD_STREAM = 0
OUTPUT_STREAMS = frozenset({Stream.STDOUT, Stream.STDERR})
MAX_CHUNK = 1024 * 1024  # what a reader hands out at once; also the launcher's frame size cap
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


def valid_size(fd: int) -> int:
    """Length of the longest prefix of whole frames (a crash may leave half of one)."""
    size = os.fstat(fd).st_size
    pos = 0
    while pos + FRAME.size <= size:
        _, length = FRAME.unpack(os.pread(fd, FRAME.size, pos))
        if pos + OVERHEAD + length > size:
            break
        pos += OVERHEAD + length
    return pos


class OutputLog:
    """The reading side of one job's output file: committed size, end, and waiting for more."""

    def __init__(self, path: Path, size: int = 0, done: bool = False) -> None:
        self.path = path
        self._size = size
        self._done = done
        self._cond = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._index = FrameIndex()

    @property
    def size(self) -> int:
        return self._size

    @property
    def done(self) -> bool:
        return self._done

    def advance(self, size: int, *, done: bool = False) -> None:
        """The launcher committed frames up to ``size``; ``done``: nothing more will come."""
        with self._cond:
            self._size = max(self._size, size)
            self._done = self._done or done
            self._cond.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_settle, fut)
            except RuntimeError:
                pass  # that reader's loop is closed; nobody is waiting any more

    def wait_beyond(self, offset: int, timeout: float | None = None) -> None:
        """Block until more than ``offset`` bytes are committed or the log is done."""
        with self._cond:
            self._cond.wait_for(lambda: self._size > offset or self._done, timeout)

    async def await_beyond(self, offset: int) -> None:
        """Asyncio form of wait_beyond."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._size > offset or self._done:
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._async_waiters.append((loop, fut))
        try:
            await fut
        finally:
            if not fut.done():
                with self._cond:
                    if (loop, fut) in self._async_waiters:
                        self._async_waiters.remove((loop, fut))

    def follow(
        self, *, follow: bool = True, tail: int | None = None, offset: int = 0
    ) -> Iterator[OutputChunk]:
        """Every chunk from output byte ``offset`` (or the last ``tail`` lines); with
        ``follow``, also what comes until the log is done. OffsetPastEnd if the log holds
        less output than ``offset``. With ``tail``, the first chunk is an empty one saying at
        which offset the tail starts, so that a reader of a silent job knows it too."""
        with _Reader(self.path, self._index) as reader:
            end = None if follow else self._size
            reader.seek(self._size, tail=tail, offset=offset)
            if tail is not None:
                yield reader.position()
            while True:
                size, done = self._size, self._done
                limit = size if end is None else end
                if reader.offset < limit:
                    yield from reader.read(limit)
                elif done or end is not None:
                    return
                else:
                    self.wait_beyond(reader.offset)

    async def afollow(
        self, *, follow: bool = True, tail: int | None = None, offset: int = 0
    ) -> AsyncIterator[OutputChunk]:
        """Asyncio form of follow."""
        with _Reader(self.path, self._index) as reader:
            end = None if follow else self._size
            reader.seek(self._size, tail=tail, offset=offset)
            if tail is not None:
                yield reader.position()
            while True:
                size, done = self._size, self._done
                limit = size if end is None else end
                if reader.offset < limit:
                    for chunk in reader.read(limit):
                        yield chunk
                elif done or end is not None:
                    return
                else:
                    await self.await_beyond(reader.offset)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


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


class _Reader:
    """Parses frames from an output file, from a frame boundary up to a committed size;
    ``out`` is the output offset of the next byte it hands out."""

    def __init__(self, path: Path, index: FrameIndex) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._index = index
        self.offset = 0
        self.out = 0
        self._skip = 0  # bytes of the next frame's data to leave out (for tail and offset)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def seek(self, size: int, *, tail: int | None, offset: int) -> None:
        """Start at the last ``tail`` lines, or at output byte ``offset``, of the first
        ``size`` bytes of the file."""
        if tail is not None:
            self._seek_tail(tail, size)
            self.out = self._index.output_before(self._fd, self.offset) + self._skip
        elif offset:
            found = self._index.find_output(self._fd, offset, size)
            if found is None:
                total = self._index.output_before(self._fd, size)
                raise OffsetPastEnd(
                    f"offset {offset} is past the end of the job's output ({total} bytes)"
                )
            self.offset, start = found
            self._skip = offset - start
            self.out = offset

    def _seek_tail(self, lines: int, size: int) -> None:
        """Start at the last ``lines`` lines of the first ``size`` bytes, like ``tail -n``."""
        if lines == 0:
            self.offset = size
            return
        end = size
        wanted = lines  # newlines to pass, walking back: the one before each line we keep
        first = True
        while end > 0:
            (length,) = TRAILER.unpack(os.pread(self._fd, TRAILER.size, end - TRAILER.size))
            start = end - OVERHEAD - length
            (stream,) = os.pread(self._fd, 1, start)
            if stream not in OUTPUT_STREAMS:
                end = start
                continue
            data = os.pread(self._fd, length, start + FRAME.size)
            stop = len(data)
            if first and data.endswith(b"\n"):
                stop -= 1  # a final newline ends the last line, it does not start one
            first = False
            while wanted:
                stop = data.rfind(b"\n", 0, stop)
                if stop < 0:
                    break
                wanted -= 1
            if not wanted:
                self.offset, self._skip = start, stop + 1
                return
            end = start
        self.offset, self._skip = 0, 0

    def read(self, limit: int) -> list[OutputChunk]:
        """Chunks from the current offset up to ``limit``, adjacent same-stream frames merged."""
        head = os.pread(self._fd, FRAME.size, self.offset)
        if len(head) == FRAME.size:
            stream, length = FRAME.unpack(head)
            if length >= BIG_FRAME:  # read straight into its own bytes: one copy fewer
                return self._read_big(stream, length)
        want = min(limit - self.offset, MAX_CHUNK + OVERHEAD)
        buf = memoryview(os.pread(self._fd, want, self.offset))
        chunks: list[OutputChunk] = []
        pieces: list[memoryview] = []
        stream = 0
        pos = 0
        while pos + FRAME.size <= len(buf):
            frame_stream, length = FRAME.unpack_from(buf, pos)
            end = pos + OVERHEAD + length
            if end > len(buf):
                if pos == 0:  # a frame bigger than the window: read it whole
                    return self._read_big(frame_stream, length)
                break
            if frame_stream not in OUTPUT_STREAMS:
                pos = end
                continue
            if frame_stream != stream and pieces:
                chunks.append(self._chunk(stream, b"".join(pieces)))
                pieces = []
            stream = frame_stream
            data = buf[pos + FRAME.size + self._skip : end - TRAILER.size]
            self._skip = 0
            if data:
                pieces.append(data)
            pos = end
        if pos == 0:
            raise OSError(f"output log {self._fd} is shorter than its committed size")
        if pieces:
            chunks.append(self._chunk(stream, b"".join(pieces)))
        self.offset += pos
        return chunks

    def _read_big(self, stream: int, length: int) -> list[OutputChunk]:
        if stream not in OUTPUT_STREAMS:
            self.offset += OVERHEAD + length
            return []
        data = os.pread(self._fd, length - self._skip, self.offset + FRAME.size + self._skip)
        self._skip = 0
        self.offset += OVERHEAD + length
        return [self._chunk(stream, data)]

    def position(self) -> OutputChunk:
        """An empty chunk at the output offset the reader is at."""
        return OutputChunk(Stream.STDOUT, b"", self.out)

    def _chunk(self, stream: int, data: bytes) -> OutputChunk:
        chunk = OutputChunk(Stream(stream), data, self.out)
        self.out += len(data)
        return chunk
