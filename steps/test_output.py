"""Steps for features/output.feature."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from pytest_bdd import parsers, scenarios, then, when

from jobmgr.worker import OutputChunk, Stream, Worker

from .fixtures_worker import collected, start, unescape

scenarios("output.feature")


def _follow_in_thread(worker: Worker, job_id: str) -> dict[str, Any]:
    reader: dict[str, Any] = {"chunks": [], "ended_at": None}

    def run() -> None:
        for chunk in worker.output(job_id):
            reader["chunks"].append(chunk)
        reader["ended_at"] = time.monotonic()

    reader["thread"] = threading.Thread(target=run, daemon=True)
    reader["thread"].start()
    return reader


def _stdout(chunks: list[OutputChunk]) -> bytes:
    return b"".join(c.data for c in chunks if c.stream is Stream.STDOUT)


@when(parsers.parse("{count:d} readers follow the output at the same time"))
def _readers(worker: Worker, ctx: dict[str, Any], count: int) -> None:
    digests: list[tuple[int, str]] = []
    lock = threading.Lock()

    def run() -> None:
        digest, size = hashlib.sha256(), 0
        for chunk in worker.output(ctx["job"]):
            assert chunk.stream is Stream.STDOUT
            digest.update(chunk.data)
            size += len(chunk.data)
        with lock:
            digests.append((size, digest.hexdigest()))

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ctx["digests"] = digests
    ctx["readers"] = count


@then(parsers.parse("every reader received {size:d} bytes of stdout"))
def _sizes(ctx: dict[str, Any], size: int) -> None:
    assert len(ctx["digests"]) == ctx["readers"]
    assert all(s == size for s, _ in ctx["digests"]), ctx["digests"]


@then("every reader's sha256 is the same")
def _same(ctx: dict[str, Any]) -> None:
    assert len({d for _, d in ctx["digests"]}) == 1, ctx["digests"]


@when("I start a job that prints every byte value 4 times")
def _all_bytes(worker: Worker, ctx: dict[str, Any]) -> None:
    ctx["expected"] = bytes(range(256)) * 4
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4)"
    start(worker, ctx, ["python3", "-c", script])


@then("reading the output gives exactly those bytes")
def _exact(worker: Worker, ctx: dict[str, Any]) -> None:
    assert collected(worker, ctx["job"])[Stream.STDOUT] == ctx["expected"]


@then(
    parsers.parse('the output is stdout "{first}", then stderr "{second}", then stdout "{third}"')
)
def _ordered(worker: Worker, ctx: dict[str, Any], first: str, second: str, third: str) -> None:
    chunks = [(c.stream, c.data) for c in worker.output(ctx["job"])]
    assert chunks == [
        (Stream.STDOUT, unescape(first).encode()),
        (Stream.STDERR, unescape(second).encode()),
        (Stream.STDOUT, unescape(third).encode()),
    ]


@when("a reader follows the output")
def _a_reader(worker: Worker, ctx: dict[str, Any]) -> None:
    ctx["reader"] = _follow_in_thread(worker, ctx["job"])
    time.sleep(0.3)


@then(parsers.parse("the reader's stream ends within {seconds:g} seconds"))
def _ends(ctx: dict[str, Any], seconds: float) -> None:
    began = time.monotonic()
    ctx["reader"]["thread"].join(timeout=seconds)
    assert not ctx["reader"]["thread"].is_alive(), "the stream did not end"
    assert ctx["reader"]["ended_at"] - began <= seconds


@then(parsers.parse('the reader received stdout "{text}"'))
def _received(ctx: dict[str, Any], text: str) -> None:
    assert _stdout(ctx["reader"]["chunks"]) == unescape(text).encode()


@then(parsers.parse('reading the output without following gives stdout "{text}"'))
def _no_follow(worker: Worker, ctx: dict[str, Any], text: str) -> None:
    began = time.monotonic()
    out = collected(worker, ctx["job"], follow=False)
    assert time.monotonic() - began < 2
    assert out[Stream.STDOUT] == unescape(text).encode()
