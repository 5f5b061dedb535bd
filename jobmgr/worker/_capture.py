"""A job's output, captured: what waits in its pipes, appended to its log as whole frames.

Big reads are spliced from the pipe into the file without passing through this process, in
pieces of SPLICE_PIECE. Small pieces, because splice() holds the pipe's lock while it writes
(a job writing meanwhile waits on it), and because a big write makes ext4 use large folios,
whose memory must be faulted in again: 1 GiB into fresh page cache costs 0.35-0.44 CPU-s in
64 KiB writes and up to 2.4 s in 1 MiB ones.

The output cap and a failing disk (full, or erroring) stop keeping output, never the job:
the pipes are still drained and the log is cut back to whole frames.

An output frame goes with a time mark before it, in the same system call, when the clock has
moved a millisecond since the last one (see _timemarks): no extra call, 17 bytes a mark.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import termios
from collections.abc import Callable

from ._frames import FRAME, MAX_CHUNK, OVERHEAD, TRAILER, frame
from ._status import Stream
from ._timemarks import TimeMarker

SPLICE_MIN = 64 * 1024  # below this, read() + writev() costs less than three syscalls
SPLICE_PIECE = 64 * 1024


class LogWriter:
    """Appends one job's output to its log file; ``size`` is what has been committed."""

    def __init__(self, fd: int, cap: int, on_truncate: Callable[[str], None]) -> None:
        self.fd = fd
        self.size = 0
        self._cap = cap  # bytes of output kept at most; 0 for no cap
        self._kept = 0
        self.truncated_why = ""  # why output stopped being kept; empty while it is kept
        self._on_truncate = on_truncate
        self._marker = TimeMarker()

    @property
    def truncated(self) -> bool:
        return bool(self.truncated_why)

    @classmethod
    def resumed(
        cls, fd: int, cap: int, on_truncate: Callable[[str], None], size: int, kept: int
    ) -> LogWriter:
        """A writer taking over a log of ``size`` bytes, ``kept`` of them output (a job
        adopted from a dead launcher); ``fd`` is positioned at its end."""
        writer = cls(fd, cap, on_truncate)
        writer.size, writer._kept = size, kept
        return writer

    def take(self, pipe: int, stream: Stream) -> bool | None:
        """Move what waits in ``pipe`` into the log: False at EOF, None if nothing was there."""
        pending = min(pending_bytes(pipe), MAX_CHUNK)
        within_cap = not self._cap or self._kept + pending <= self._cap
        if pending >= SPLICE_MIN and not self.truncated and within_cap:
            self._splice(pipe, stream, pending)
            return True
        data = read_some(pipe, MAX_CHUNK)
        if not data:
            return None if data is None else False
        self._append(stream, data)
        return True

    def _splice(self, pipe: int, stream: Stream, length: int) -> None:
        mark = self._marker.before_output()
        header, trailer = mark + FRAME.pack(stream, length), TRAILER.pack(length)
        try:
            ok = os.write(self.fd, header) == len(header)
            ok = ok and _splice_all(pipe, self.fd, length)
            ok = ok and os.write(self.fd, trailer) == len(trailer)
        except OSError as exc:
            self._cut_back(f"writing output failed: {exc.strerror}")
            return
        if not ok:
            self._cut_back("writing output failed: disk full")
            return
        self._commit(length, len(mark))

    def _append(self, stream: Stream, data: bytes) -> None:
        if self.truncated:
            return  # nothing more is kept, but the pipe is still drained
        room = self._cap - self._kept if self._cap else len(data)
        if room < len(data):
            data = data[: max(room, 0)]
            self.give_up(f"the output cap of {self._cap} bytes was reached")
            if not data:
                return
        mark = self._marker.before_output()
        pieces = [mark, *frame(stream, data)] if mark else frame(stream, data)
        try:
            written = os.writev(self.fd, pieces)
        except OSError as exc:
            self._cut_back(f"writing output failed: {exc.strerror}")
            return
        if written != sum(len(piece) for piece in pieces):
            self._cut_back("writing output failed: disk full")
            return
        self._commit(len(data), len(mark))

    def _commit(self, length: int, marks: int) -> None:
        self.size += marks + OVERHEAD + length
        self._kept += length

    def _cut_back(self, reason: str) -> None:
        """A partial frame would corrupt every read after it: back to whole frames."""
        os.ftruncate(self.fd, self.size)
        os.lseek(self.fd, self.size, os.SEEK_SET)
        self.give_up(reason)

    def give_up(self, reason: str) -> None:
        """Keep nothing more, for ``reason``: the log ends with what is committed."""
        if not self.truncated:
            self.truncated_why = reason
            self._on_truncate(reason)


def _splice_all(pipe: int, fd: int, length: int) -> bool:
    """Move ``length`` bytes waiting in ``pipe`` to ``fd``; False if the file took fewer."""
    while length:
        moved = os.splice(pipe, fd, min(length, SPLICE_PIECE))
        if not moved:
            return False
        length -= moved
    return True


def pending_bytes(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]


def read_some(fd: int, size: int = 65536) -> bytes | None:
    """What the pipe holds, b"" at EOF, None if nothing is there yet."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINTR:
            return None
        raise
