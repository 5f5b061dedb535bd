"""A job's output on disk: one append-only file of framed chunks, and followers reading it.

Frame: 1 byte stream (1 = stdout, 2 = stderr, 0 = the job's record, see _records), 4 bytes
big-endian length, the bytes, and the length again (so ``--tail`` can walk back from the end).
Readers hand out only stdout and stderr. One file for both streams keeps their true relative
order; the launcher appends whole frames and announces each new committed size, so readers
never see a partial frame.

Readers follow the file, not the job: each reads at its own pace from its own offset, and a
slow one costs the job and the other readers nothing.  New data wakes waiters directly (a
Condition for threads, futures for asyncio); nobody sleeps on a timer.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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

    def follow(self, *, follow: bool = True, tail: int | None = None) -> Iterator[OutputChunk]:
        """Every chunk from byte 0 (or the last ``tail`` lines); with ``follow``, also what
        comes until the log is done."""
        with _Reader(self.path) as reader:
            end = None if follow else self._size
            if tail is not None:
                reader.seek_tail(tail, self._size)
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
        self, *, follow: bool = True, tail: int | None = None
    ) -> AsyncIterator[OutputChunk]:
        """Asyncio form of follow."""
        with _Reader(self.path) as reader:
            end = None if follow else self._size
            if tail is not None:
                reader.seek_tail(tail, self._size)
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


class _Reader:
    """Parses frames from an output file, from offset 0 up to a committed size."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.offset = 0
        self._skip = 0  # bytes of the next frame's data to leave out (for tail)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def seek_tail(self, lines: int, size: int) -> None:
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
                chunks.append(OutputChunk(Stream(stream), b"".join(pieces)))
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
            chunks.append(OutputChunk(Stream(stream), b"".join(pieces)))
        self.offset += pos
        return chunks

    def _read_big(self, stream: int, length: int) -> list[OutputChunk]:
        if stream not in OUTPUT_STREAMS:
            self.offset += OVERHEAD + length
            return []
        data = os.pread(self._fd, length - self._skip, self.offset + FRAME.size + self._skip)
        self._skip = 0
        self.offset += OVERHEAD + length
        return [OutputChunk(Stream(stream), data)]
