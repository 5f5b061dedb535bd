"""The output log's framing, merging, tail and follow, on files written here."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from jobmgr.worker import OffsetPastEnd, OutputIncomplete
from jobmgr.worker._frames import MAX_CHUNK, frame, seal
from jobmgr.worker._outputlog import OutputLog
from jobmgr.worker._status import OutputChunk, Stream

OUT, ERR = Stream.STDOUT, Stream.STDERR


def write_log(path: Path, frames: list[tuple[Stream, bytes]]) -> int:
    with open(path, "ab") as f:
        for stream, data in frames:
            for piece in frame(stream, data):
                f.write(piece)
    return path.stat().st_size


def chunks(log: OutputLog, **kwargs: object) -> list[tuple[Stream, bytes]]:
    """The chunks with output in them (a tail starts with an empty one saying where)."""
    return [(c.stream, c.data) for c in log.follow(**kwargs) if c.data]  # type: ignore[arg-type]


def test_adjacent_frames_of_one_stream_merge_and_order_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [(OUT, b"a"), (OUT, b"b"), (ERR, b"c"), (OUT, b"d")])
    log = OutputLog(path, size, done=True)
    assert chunks(log) == [(OUT, b"ab"), (ERR, b"c"), (OUT, b"d")]


def test_big_frames_come_whole_and_no_chunk_exceeds_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    big = os.urandom(MAX_CHUNK)
    size = write_log(path, [(OUT, b"x" * 10), (OUT, big), (ERR, b"y")])
    got = list(OutputLog(path, size, done=True).follow())
    assert b"".join(c.data for c in got if c.stream is OUT) == b"x" * 10 + big
    assert all(len(c.data) <= MAX_CHUNK for c in got)


def test_mid_sized_frames_merge_into_chunks_of_up_to_the_cap(tmp_path: Path) -> None:
    # A launcher that keeps up with a fast job writes many frames of a few hundred KiB: a
    # message per frame would cost gRPC several times as many messages per GiB.
    path = tmp_path / "out.log"
    pieces = [os.urandom(200 * 1024) for _ in range(12)]
    size = write_log(path, [(OUT, piece) for piece in pieces])
    got = list(OutputLog(path, size, done=True).follow())
    assert b"".join(c.data for c in got) == b"".join(pieces)
    assert all(len(c.data) <= MAX_CHUNK for c in got)
    assert len(got) == 3  # five frames of 200 KiB to a chunk


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b""),
        (1, b"five\n"),
        (2, b"four\nfive\n"),
        (4, b"two\nthree\nfour\nfive\n"),
        (9, b"one\ntwo\nthree\nfour\nfive\n"),
    ],
)
def test_tail_counts_lines_across_frames_and_streams(
    tmp_path: Path, lines: int, expected: bytes
) -> None:
    path = tmp_path / "out.log"
    frames = [(OUT, b"one\ntw"), (OUT, b"o\n"), (ERR, b"three\nfour\n"), (OUT, b"five\n")]
    size = write_log(path, frames)
    got = b"".join(c.data for c in OutputLog(path, size, done=True).follow(tail=lines))
    assert got == expected


def test_tail_keeps_an_unfinished_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [(OUT, b"one\ntwo\nthr"), (OUT, b"ee")])
    assert b"".join(c.data for c in OutputLog(path, size, done=True).follow(tail=1)) == b"three"


def test_a_follower_gets_what_is_committed_later_and_ends_when_done(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.touch()
    log = OutputLog(path)
    got: list[OutputChunk] = []
    reader = threading.Thread(target=lambda: got.extend(log.follow()))
    reader.start()
    size = write_log(path, [(OUT, b"first")])
    log.advance(size)
    size = write_log(path, [(ERR, b"second")])
    log.advance(size, done=True)
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert [(c.stream, c.data) for c in got] == [(OUT, b"first"), (ERR, b"second")]


def test_without_follow_only_what_is_there_now(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    log = OutputLog(path, write_log(path, [(OUT, b"now")]))
    assert chunks(log, follow=False) == [(OUT, b"now")]


def test_asyncio_followers_wake_on_new_data(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.touch()
    log = OutputLog(path)

    async def follow() -> bytes:
        return b"".join([c.data async for c in log.afollow()])

    async def main() -> bytes:
        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        log.advance(write_log(path, [(OUT, b"late")]), done=True)
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(main()) == b"late"


def test_sealing_keeps_the_data_of_a_half_written_frame(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    write_log(path, [(OUT, b"whole")])
    with open(path, "ab") as f:
        f.write(frame(OUT, b"half of it")[0] + b"half")
    fd = os.open(path, os.O_RDWR)
    try:
        size = seal(fd)
    finally:
        os.close(fd)
    assert size == path.stat().st_size
    assert chunks(OutputLog(path, size, done=True)) == [(OUT, b"wholehalf")]


def test_sealing_drops_a_header_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [(OUT, b"whole")])
    with open(path, "ab") as f:
        f.write(frame(OUT, b"next")[0][:3])
    fd = os.open(path, os.O_RDWR)
    try:
        assert seal(fd) == size == path.stat().st_size
    finally:
        os.close(fd)


def test_the_record_frame_is_never_handed_out(tmp_path: Path) -> None:
    from jobmgr.worker import JobState, Limits
    from jobmgr.worker._records import read_record, record_frame, write_result
    from jobmgr.worker._shim import JobRecord, JobResult

    job = JobRecord("j", ("x" * 100_000,), "", Limits(), {}, None, 0.0)
    result = JobResult(JobState.EXITED, 0, None, False, 1.0, 0.0, 0, 0)
    path = tmp_path / "out.log"
    path.write_bytes(record_frame(job))
    size = write_log(path, [(OUT, b"one\n"), (ERR, b"two\n")])
    write_result(path, job, result, len(record_frame(job)))
    log = OutputLog(path, size, done=True)
    assert chunks(log) == [(OUT, b"one\n"), (ERR, b"two\n")]
    assert chunks(log, tail=5) == [(OUT, b"one\n"), (ERR, b"two\n")]
    assert read_record(path) == (job, result)


def test_a_damaged_frame_is_skipped_to_the_next_that_checks_out_and_said(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.log"
    write_log(path, [(OUT, b"one\n"), (OUT, b"two\n"), (ERR, b"three\n")])
    second = len(b"".join(frame(OUT, b"one\n")))
    with open(path, "r+b") as f:  # the second frame's header: another stream and length
        f.seek(second)
        f.write(b"\x07\xff\xff")
    log = OutputLog(path, path.stat().st_size, done=True)
    got = []
    with pytest.raises(OutputIncomplete, match=f"4 bytes at byte {second} could not be read"):
        for chunk in log.follow():
            got.append((chunk.stream, chunk.data))
    assert got == [(OUT, b"one\n"), (ERR, b"three\n")]


def test_a_damaged_record_frame_costs_no_output(tmp_path: Path) -> None:
    from jobmgr.worker import Limits
    from jobmgr.worker._records import DamagedRecord, load_record, record_frame
    from jobmgr.worker._shim import JobRecord

    job = JobRecord("j", ("true",), "", Limits(), {}, None, 0.0)
    path = tmp_path / "out.log"
    path.write_bytes(bytes(32) + record_frame(job)[32:])
    size = write_log(path, [(OUT, b"all\n"), (ERR, b"of it\n")])
    assert isinstance(load_record(path), DamagedRecord)
    log = OutputLog(path, size, done=True)
    assert chunks(log) == [(OUT, b"all\n"), (ERR, b"of it\n")]
    assert chunks(log, tail=1) == [(ERR, b"of it\n")]


def test_a_lost_jobs_output_ends_with_the_reason_after_all_that_was_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [(OUT, b"kept\n")])
    log = OutputLog(path)
    log.advance(size, done=True, incomplete="the job was lost: its launcher died")
    got = b""
    with pytest.raises(OutputIncomplete, match="the job was lost: its launcher died"):
        for chunk in log.follow():
            got += chunk.data
    assert got == b"kept\n"


def test_reading_from_any_offset_gives_the_rest_of_the_output_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small index steps and windows, so that marks, window edges and frames bigger than a
    # window all come up in a small file.
    monkeypatch.setattr("jobmgr.worker._frames.INDEX_STEP", 100)
    monkeypatch.setattr("jobmgr.worker._frames.INDEX_WINDOW", 64)
    path = tmp_path / "out.log"
    frames = [(OUT if i % 3 else ERR, bytes([65 + i % 26]) * (i % 50)) for i in range(200)]
    with open(path, "ab") as f:  # record frames (stream 0) count for nothing
        for i, (stream, data) in enumerate(frames):
            if i % 17 == 0:
                f.write(b"".join(frame(0, b"record")))  # type: ignore[arg-type]
            f.write(b"".join(frame(stream, data)))
    whole = b"".join(data for _, data in frames)
    log = OutputLog(path, path.stat().st_size, done=True)
    for offset in [*range(0, len(whole), 37), len(whole)]:
        got = list(log.follow(offset=offset))
        assert b"".join(c.data for c in got) == whole[offset:], offset
        assert [c.offset for c in got] == [
            offset + sum(len(c.data) for c in got[:i]) for i in range(len(got))
        ]


def test_an_offset_past_the_output_is_refused_with_the_output_size(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [(OUT, b"hello\n"), (ERR, b"oops\n")])
    with pytest.raises(OffsetPastEnd, match=r"offset 12 is past the end .* \(11 bytes\)"):
        list(OutputLog(path, size, done=True).follow(offset=12))


def test_a_tail_first_says_at_which_offset_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    size = write_log(path, [(OUT, b"one\ntwo\n"), (ERR, b"three\n")])
    log = OutputLog(path, size, done=True)
    first, *rest = list(log.follow(tail=1))
    assert (first.data, first.offset) == (b"", 8)
    assert [(c.data, c.offset) for c in rest] == [(b"three\n", 8)]
    assert [(c.data, c.offset) for c in log.follow(tail=0)] == [(b"", 14)]
