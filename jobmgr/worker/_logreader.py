"""Reading a job's output log: frames to chunks, from any place in it, around damage.

See _frames for the format and _outputlog for following a log as it grows. A reader hands out
stdout and stderr, merging adjacent frames of one stream, and steps over records; a time mark
(see _timemarks) ends the chunk before it and dates those after it. A frame whose header and
trailer disagree, or that names no stream of ours, is damage: the reader goes on from the next
frame that checks out and notes how much output it skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._errors import OffsetPastEnd
from ._frames import (
    BIG_FRAME,
    FRAME,
    MAX_CHUNK,
    OUTPUT_STREAMS,
    OVERHEAD,
    TRAILER,
    FrameIndex,
    known_frame,
)
from ._status import OutputChunk, Stream
from ._timemarks import MARK, TIME_STREAM

_STREAM_BYTE = re.compile(rb"[\x00-\x03]")  # where a frame may start, when resyncing


class FrameReader:
    """Parses frames from an output file, from a frame boundary up to a committed size;
    ``out`` is the output offset of the next byte it hands out, ``when`` the capture time
    of the last time mark it passed."""

    def __init__(self, path: Path, index: FrameIndex) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._index = index
        self.offset = 0
        self.out = 0
        self.when: int | None = None
        self._skip = 0  # bytes of the next frame's data to leave out (for tail and offset)
        self.skipped: list[tuple[int, int]] = []  # (offset, bytes) of output lost to damage

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def seek(self, size: int, *, tail: int | None, offset: int, since: int | None) -> None:
        """Start at the last ``tail`` lines, at output byte ``offset``, or at the first
        output captured at or after ``since``, of the first ``size`` bytes of the file."""
        if tail is not None:
            self._seek_tail(tail, size)
            _, out, self.when = self._index.place(self._fd, self.offset)
            self.out = out + self._skip
        elif since is not None:
            self.offset, self.out, self.when = self._index.find_time(self._fd, since, size)
        elif offset:
            found = self._index.find_output(self._fd, offset, size)
            if found is None:
                total = self._index.place(self._fd, size)[1]
                raise OffsetPastEnd(
                    f"offset {offset} is past the end of the job's output ({total} bytes)"
                )
            self.offset, start, self.when = found
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
            # A big frame is read straight into its own bytes: one copy fewer. A time mark is
            # read alone, so that the window starts at the frame it dates: the launcher marks
            # most 1 MiB frames of a fast job, and mark + frame overflow the window, which was
            # then read for nothing (every byte read twice).
            if length >= BIG_FRAME or stream == TIME_STREAM:
                return self._read_alone(stream, length, limit)
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
                    return self._read_alone(frame_stream, length, limit)
                break
            if (
                not known_frame(frame_stream, length)
                or TRAILER.unpack_from(buf, end - 4)[0] != length
            ):
                if pos == 0:
                    return self._resync(limit)
                break  # served up to here; the next read starts at the damage
            if frame_stream not in OUTPUT_STREAMS:
                if frame_stream == TIME_STREAM:  # what follows has a time of its own
                    if pieces:
                        chunks.append(self._chunk(stream, b"".join(pieces)))
                        pieces = []
                    (self.when,) = MARK.unpack_from(buf, pos + FRAME.size)
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

    def _read_alone(self, stream: int, length: int, limit: int) -> list[OutputChunk]:
        if not self._checks_out(self.offset, stream, length, limit):
            return self._resync(limit)
        if stream not in OUTPUT_STREAMS:
            if stream == TIME_STREAM:
                (self.when,) = MARK.unpack(os.pread(self._fd, MARK.size, self.offset + FRAME.size))
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
        if not known_frame(stream, length) or end > limit:
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
        chunk = OutputChunk(Stream(stream), data, self.out, self.when)
        self.out += len(data)
        return chunk
