"""A job's output on disk: one append-only file of framed chunks, and followers reading it.

Frame: 1 byte stream (1 = stdout, 2 = stderr, 0 = the job's record, see _records), 4 bytes
big-endian length, the bytes, and the length again (so ``--tail`` can walk back from the end).
Readers hand out only stdout and stderr. One file for both streams keeps their true relative
order; the launcher appends whole frames and announces each new committed size, so readers
never see a partial frame.

Readers follow the file, not the job: each reads at its own pace from its own offset, and a
slow one costs the job and the other readers nothing.  New data wakes waiters directly (a
Condition for threads, futures for asyncio); nobody sleeps on a timer.

A damaged log is read around its damage (see _logreader), and a reader that skipped output
ends with OutputIncomplete, saying how much, after everything else. A log the worker knows to be
incomplete (its job was lost) ends the same way, so a follower never mistakes a cut-off job
for a finished one.

An output offset counts the bytes of stdout and stderr together, in the order the log holds
them (the order a whole read hands them out), record frames left out: the job's output as a
reader that took all of it has it. A reader may start at any such offset (``FrameIndex``).
Time marks (see _timemarks) say when the output after them was captured: a chunk carries the
time of the last mark before it, and a reader may start at the first output captured at or
after a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypedDict

from ._errors import InvalidSpec, OutputIncomplete
from ._frames import FrameIndex
from ._logreader import FrameReader
from ._status import OutputChunk

log = logging.getLogger("jobmgr.worker")


class OutputStart(TypedDict, total=False):
    """Where a read of a job's output starts: at most one of these; none, its first byte."""

    tail: int | None  # its last N lines
    offset: int  # output byte N
    since: int | None  # the first output captured at or after this, in ns since the epoch


def check_start(start: OutputStart) -> OutputStart:
    """``start``, checked: InvalidSpec for a negative one, or more than one."""
    tail, offset, since = start.get("tail"), start.get("offset", 0), start.get("since")
    if tail is not None and tail < 0:
        raise InvalidSpec(f"tail must be >= 0 lines, got {tail}")
    if offset < 0:
        raise InvalidSpec(f"offset must be >= 0 bytes, got {offset}")
    if sum((tail is not None, offset != 0, since is not None)) > 1:
        raise InvalidSpec("give one of tail, offset and since: each says where output starts")
    return start


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
        self,
        *,
        follow: bool = True,
        tail: int | None = None,
        offset: int = 0,
        since: int | None = None,
    ) -> Iterator[OutputChunk]:
        """Every chunk from output byte ``offset`` (or the last ``tail`` lines, or the first
        output captured at or after ``since``); with ``follow``, also what comes until the log
        is done. OffsetPastEnd if the log holds less output than ``offset``. With ``tail`` or
        ``since``, the first chunk is an empty one saying at which offset the output starts,
        so that a reader of a silent job knows it too."""
        with self._open() as reader:
            end = None if follow else self._size
            reader.seek(self._size, tail=tail, offset=offset, since=since)
            if tail is not None or since is not None:
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
        self,
        *,
        follow: bool = True,
        tail: int | None = None,
        offset: int = 0,
        since: int | None = None,
    ) -> AsyncIterator[OutputChunk]:
        """Asyncio form of follow."""
        with self._open() as reader:
            end = None if follow else self._size
            reader.seek(self._size, tail=tail, offset=offset, since=since)
            if tail is not None or since is not None:
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

    def _open(self) -> FrameReader:
        try:
            return FrameReader(self.path, self._index)
        except FileNotFoundError:
            raise OutputIncomplete(f"job {self.job_id}'s output log is gone") from None
        except OSError as exc:  # the message says why, never where: the path is the server's
            raise OutputIncomplete(
                f"job {self.job_id}'s output log cannot be read: {exc.strerror}"
            ) from None

    def _finish(self, reader: FrameReader) -> None:
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
