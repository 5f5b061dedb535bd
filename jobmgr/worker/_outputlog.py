"""A job's output on disk: one append-only file of framed chunks, and followers reading it.

Frame: 1 byte stream (1 = stdout, 2 = stderr, 0 = the job's record, see _records), 4 bytes
big-endian length, the bytes, and the length again (so ``--tail`` can walk back from the end).
Readers hand out only stdout and stderr. One file for both streams keeps their true relative
order; the launcher appends whole frames and announces each new committed size, so readers
never see a partial frame.

Readers follow the file, not the job: each reads at its own pace from its own offset, and a
slow one costs the job and the other readers nothing.  New data wakes waiters directly (a
Condition for threads, futures for asyncio); nobody sleeps on a timer.

A damaged log is read around its damage: a frame whose header and trailer disagree is
skipped to the next frame that checks out, and a reader that skipped output ends with
OutputIncomplete, saying how much, after everything else. A log the worker knows to be
incomplete (its job was lost) ends the same way, so a follower never mistakes a cut-off job
for a finished one.

An output offset counts the bytes of stdout and stderr together, in the order the log holds
them (the order a whole read hands them out), record frames left out: the job's output as a
reader that took all of it has it. A reader may start at any such offset (``FrameIndex``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from ._errors import OffsetPastEnd, OutputIncomplete
from ._frames import (
    BIG_FRAME,
    FRAME,
    MAX_CHUNK,
    MAX_FRAME,
    OUTPUT_STREAMS,
    OVERHEAD,
    TRAILER,
    FrameIndex,
)
from ._status import OutputChunk, Stream

_STREAM_BYTE = re.compile(rb"[\x00\x01\x02]")  # where a frame may start, when resyncing
log = logging.getLogger("jobmgr.worker")


class OutputLog:
    """The reading side of one job's output file: committed size, end, and waiting for more."""

    def __init__(self, path: Path, size: int = 0, done: bool = False) -> None:
        self.path = path
        self._size = size
        self._done = done
        self._incomplete = ""  # why the log lacks output the job wrote, when it does
        self._damage_logged = False
        self._cond = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._index = FrameIndex()

    @property
    def size(self) -> int:
        return self._size

    @property
    def done(self) -> bool:
        return self._done

    @property
    def job_id(self) -> str:
        return self.path.name.removesuffix(".log")

    def advance(self, size: int, *, done: bool = False, incomplete: str = "") -> None:
        """The launcher committed frames up to ``size``; ``done``: nothing more will come;
        ``incomplete``: why output the job wrote is missing (readers end with that error)."""
        with self._cond:
            self._size = max(self._size, size)
            self._done = self._done or done
            self._incomplete = self._incomplete or incomplete
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
        with self._open() as reader:
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
                    self._finish(reader)
                    return
                else:
                    self.wait_beyond(reader.offset)

    async def afollow(
        self, *, follow: bool = True, tail: int | None = None, offset: int = 0
    ) -> AsyncIterator[OutputChunk]:
        """Asyncio form of follow."""
        with self._open() as reader:
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
                    self._finish(reader)
                    return
                else:
                    await self.await_beyond(reader.offset)

    def _open(self) -> _Reader:
        try:
            return _Reader(self.path, self._index)
        except FileNotFoundError:
            raise OutputIncomplete(f"job {self.job_id}'s output log is gone") from None
        except OSError as exc:  # the message says why, never where: the path is the server's
            raise OutputIncomplete(
                f"job {self.job_id}'s output log cannot be read: {exc.strerror}"
            ) from None

    def _finish(self, reader: _Reader) -> None:
        """After the last chunk: say what is missing, if anything."""
        problems = []
        if reader.skipped:
            where = ", ".join(f"{n} bytes at byte {at}" for at, n in reader.skipped[:3])
            problems.append(f"its output log is damaged: {where} could not be read")
            with self._cond:
                first, self._damage_logged = not self._damage_logged, True
            if first:
                log.error("job %s: output log damaged (%s); served around it", self.job_id, where)
        if self._incomplete and self._done:
            problems.append(self._incomplete)
        if problems:
            raise OutputIncomplete(
                f"job {self.job_id}: " + "; ".join(problems) + " (the rest of its output was sent)"
            )


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Reader:
    """Parses frames from an output file, from a frame boundary up to a committed size;
    ``out`` is the output offset of the next byte it hands out."""

    def __init__(self, path: Path, index: FrameIndex) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._index = index
        self.offset = 0
        self.out = 0
        self._skip = 0  # bytes of the next frame's data to leave out (for tail and offset)
        self.skipped: list[tuple[int, int]] = []  # (offset, bytes) of output lost to damage

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
        while end >= OVERHEAD:
            (length,) = TRAILER.unpack(os.pread(self._fd, TRAILER.size, end - TRAILER.size))
            start = end - OVERHEAD - length
            if start < 0 or FRAME.unpack(os.pread(self._fd, FRAME.size, start))[1] != length:
                self.offset, self._skip = end, 0  # damage: start after it
                return
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
                return self._read_big(stream, length, limit)
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
                    return self._read_big(frame_stream, length, limit)
                break
            if frame_stream > Stream.STDERR or TRAILER.unpack_from(buf, end - 4)[0] != length:
                if pos == 0:
                    return self._resync(limit)
                break  # served up to here; the next read starts at the damage
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
            return self._resync(limit)  # a header cut short, or damaged
        if pieces:
            chunks.append(self._chunk(stream, b"".join(pieces)))
        self.offset += pos
        return chunks

    def _read_big(self, stream: int, length: int, limit: int) -> list[OutputChunk]:
        if not self._checks_out(self.offset, stream, length, limit):
            return self._resync(limit)
        if stream not in OUTPUT_STREAMS:
            self.offset += OVERHEAD + length
            return []
        data = os.pread(self._fd, length - self._skip, self.offset + FRAME.size + self._skip)
        self._skip = 0
        self.offset += OVERHEAD + length
        return [self._chunk(stream, data)]

    def _checks_out(self, at: int, stream: int, length: int, limit: int) -> bool:
        """Whether the frame at ``at`` is one: a known stream, inside ``limit``, its trailer
        repeating its length."""
        end = at + OVERHEAD + length
        if stream > Stream.STDERR or length > MAX_FRAME or end > limit:
            return False
        (trailer,) = TRAILER.unpack(os.pread(self._fd, TRAILER.size, end - TRAILER.size))
        return bool(trailer == length)

    def _resync(self, limit: int) -> list[OutputChunk]:
        """The frame at the offset is damaged: go on from the next frame that checks out (or
        ``limit``), noting how much output was skipped. A damaged region inside the first
        frame (the one its trailer says starts at byte 0) is the job's record: no output."""
        start = self.offset
        found = self._next_frame(start + 1, limit)
        end = limit if found is None else found
        lost = end - start
        if end - start >= TRAILER.size:
            (length,) = TRAILER.unpack(os.pread(self._fd, TRAILER.size, end - TRAILER.size))
            began = end - OVERHEAD - length
            if began == 0:
                lost = 0
            elif began == start:  # one frame whose header was damaged: its data is lost
                lost = length
        if lost:
            self.skipped.append((start, lost))
        self.offset, self._skip = end, 0
        return []

    def _next_frame(self, start: int, limit: int) -> int | None:
        """The first offset in [start, limit) where a frame that checks out begins."""
        window = 64 * 1024
        pos = start
        while pos < limit:
            buf = os.pread(self._fd, min(window, limit - pos), pos)
            if not buf:
                return None
            for match in _STREAM_BYTE.finditer(buf):
                at = pos + match.start()
                head = os.pread(self._fd, FRAME.size, at)
                if len(head) == FRAME.size:
                    stream, length = FRAME.unpack(head)
                    if self._checks_out(at, stream, length, limit):
                        return at
            pos += len(buf)
        return None

    def position(self) -> OutputChunk:
        """An empty chunk at the output offset the reader is at."""
        return OutputChunk(Stream.STDOUT, b"", self.out)

    def _chunk(self, stream: int, data: bytes) -> OutputChunk:
        chunk = OutputChunk(Stream(stream), data, self.out)
        self.out += len(data)
        return chunk
