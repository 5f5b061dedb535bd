"""Capture times in the output log: the launcher's time marks, and readers that carry them,
start at them, and read logs that have none."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from jobmgr.api import job_pb2
from jobmgr.api._mapping import output_to_wire
from jobmgr.worker._capture import LogWriter
from jobmgr.worker._errors import OutputIncomplete
from jobmgr.worker._frames import MAX_CHUNK, frame, seal
from jobmgr.worker._outputlog import OutputLog
from jobmgr.worker._status import OutputChunk, Stream
from jobmgr.worker._timemarks import MARK_INTERVAL, TIME_STREAM, mark_frame

OUT, ERR = Stream.STDOUT, Stream.STDERR
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z, in ns


def write_log(path: Path, items: list[tuple[Stream, bytes] | int]) -> int:
    """Frames of output, and a time mark for each int."""
    with open(path, "ab") as f:
        for item in items:
            f.write(mark_frame(item) if isinstance(item, int) else b"".join(frame(*item)))
    return path.stat().st_size


def timed(log: OutputLog, **kwargs: object) -> list[tuple[bytes, int, int | None]]:
    got: list[OutputChunk] = list(log.follow(**kwargs))  # type: ignore[arg-type]
    return [(c.data, c.offset, c.captured_at) for c in got]


def test_a_chunk_carries_the_time_of_the_last_mark_before_it(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [(OUT, b"a"), T0, (OUT, b"b"), (OUT, b"c"), T0 + 5, (OUT, b"d")])
    # Output before any mark has no time; a mark ends a merged chunk.
    assert timed(OutputLog(path, size, done=True)) == [
        (b"a", 0, None),
        (b"bc", 1, T0),
        (b"d", 3, T0 + 5),
    ]


def test_since_starts_at_the_first_output_captured_at_or_after_it(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    items: list[tuple[Stream, bytes] | int] = []
    for second in range(5):
        items += [T0 + second * 10**9, (OUT, f"line {second}\n".encode())]
    log = OutputLog(path, write_log(path, items), done=True)
    assert timed(log, since=T0 + 3 * 10**9 - 1) == [
        (b"", 21, None),  # where it starts, first, as a tail does
        (b"line 3\n", 21, T0 + 3 * 10**9),
        (b"line 4\n", 28, T0 + 4 * 10**9),
    ]
    assert timed(log, since=T0 + 10 * 10**9) == [(b"", 35, None)]


def test_a_log_without_time_marks_reads_whole_and_since_selects_none_of_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.log"
    log = OutputLog(path, write_log(path, [(OUT, b"old\n"), (ERR, b"log\n")]), done=True)
    assert timed(log) == [(b"old\n", 0, None), (b"log\n", 4, None)]
    assert timed(log, since=0) == [(b"", 8, None)]


def test_a_reader_starting_inside_the_log_has_the_time_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobmgr.worker._frames.INDEX_STEP", 100)
    monkeypatch.setattr("jobmgr.worker._frames.INDEX_WINDOW", 64)
    path = tmp_path / "out.log"
    items: list[tuple[Stream, bytes] | int] = []
    for i in range(60):
        if i % 4 == 0:
            items.append(T0 + i)
        items.append((OUT if i % 3 else ERR, bytes([65 + i % 26]) * 6 + b"\n"))
    log = OutputLog(path, write_log(path, items), done=True)
    for offset in range(0, 60 * 7, 11):
        first = timed(log, offset=offset)[0]
        assert first[2] == T0 + offset // 7 // 4 * 4, offset
    tail = [c for c in timed(log, tail=1) if c[0]]
    assert tail[0][2] == T0 + 56


def test_a_time_mark_is_not_damage_nor_output_to_readers_that_skip_other_streams(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [T0, (OUT, b"x" * 100)])
    assert size == 17 + 9 + 100 and path.read_bytes()[0] == TIME_STREAM
    assert b"".join(c.data for c in OutputLog(path, size, done=True).follow()) == b"x" * 100


def test_the_launcher_marks_output_at_most_once_a_millisecond(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.set_blocking(read, False)
    fd = os.open(tmp_path / "out.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    writer = LogWriter(fd, 0, lambda _reason: None)
    try:
        before = time.time_ns()
        for _ in range(3):  # taken at once: one mark for all three
            os.write(write, b"quick\n")
            writer.take(read, OUT)
        time.sleep(2 * MARK_INTERVAL / 1e9)
        os.write(write, b"later\n")
        writer.take(read, ERR)
        after = time.time_ns()
    finally:
        for f in (read, write, fd):
            os.close(f)
    log = OutputLog(tmp_path / "out.log", writer.size, done=True)
    got = timed(log)
    assert [data for data, _, _ in got] == [b"quick\n" * 3, b"later\n"]
    first, second = got[0][2], got[1][2]
    assert first is not None and second is not None
    assert before <= first < second <= after
    assert second - first >= 2 * MARK_INTERVAL
    assert writer.size == 2 * 17 + 4 * 9 + 4 * 6  # two marks, four frames


def test_captured_at_on_the_wire_is_what_protobuf_encodes() -> None:
    chunk = OutputChunk(OUT, b"hello\n", 12, T0 + 123_456_789)
    (wire,) = output_to_wire(chunk)
    message = job_pb2.OutputResponse(output=b"hello\n", stream=job_pb2.STREAM_STDOUT, offset=12)
    message.captured_at.FromNanoseconds(T0 + 123_456_789)
    assert wire == message.SerializeToString()
    untimed = OutputChunk(OUT, b"hello\n", 12)
    assert (
        job_pb2.OutputResponse.FromString(next(output_to_wire(untimed))).HasField("captured_at")
        is False
    )


def test_sealing_after_a_crash_keeps_time_marks_and_drops_one_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    whole = write_log(path, [T0, (OUT, b"one\n"), T0 + 1, (ERR, b"two\n")])
    with open(path, "ab") as f:
        f.write(mark_frame(T0 + 2)[:10])  # the launcher died writing a mark
    fd = os.open(path, os.O_RDWR)
    try:
        assert seal(fd) == whole  # marks are frames of ours, not damage
    finally:
        os.close(fd)
    log = OutputLog(path, whole, done=True)
    assert timed(log) == [(b"one\n", 0, T0), (b"two\n", 4, T0 + 1)]


def test_a_reader_skipping_damage_finds_the_next_time_mark_and_keeps_its_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [T0, (OUT, b"one\n"), T0 + 1, (OUT, b"two\n"), T0 + 2, (ERR, b"3\n")])
    data = bytearray(path.read_bytes())
    data[17 + 9 + 4 + 17] = 0x7F  # the second output frame's stream byte: damage
    path.write_bytes(bytes(data))
    with pytest.raises(OutputIncomplete, match="damaged: 4 bytes"):
        got = []
        for chunk in OutputLog(path, size, done=True).follow():
            got.append((chunk.data, chunk.captured_at))
    assert got == [(b"one\n", T0), (b"3\n", T0 + 2)]


def test_a_log_of_marked_1_mib_frames_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fast job's log: the launcher marks the time before most of its 1 MiB frames. A reader
    # that read a window from each mark read the frame after it twice.
    path = tmp_path / "out.log"
    items: list[tuple[Stream, bytes] | int] = []
    for n in range(8):
        items += [T0 + n, (OUT, bytes([n]) * MAX_CHUNK)]
    size = write_log(path, items)
    read = 0
    pread = os.pread

    def counted(fd: int, length: int, offset: int) -> bytes:
        nonlocal read
        data = pread(fd, length, offset)
        read += len(data)
        return data

    monkeypatch.setattr(os, "pread", counted)
    got = timed(OutputLog(path, size, done=True))
    monkeypatch.undo()

    assert [(data[:1], len(data), when) for data, _, when in got] == [
        (bytes([n]), MAX_CHUNK, T0 + n) for n in range(8)
    ]
    assert read < 1.01 * size, f"{read} bytes read for a log of {size}"
