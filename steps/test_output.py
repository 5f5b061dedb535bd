"""Steps for features/output.feature."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from pytest_bdd import parsers, scenarios, then, when

from harness.speed import scaled
from harness.worker import collected
from jobmgr.worker import OutputChunk, Stream, Worker

from ._phrases import unescape
from ._worker_steps import start
from .fixtures_scenario import Scenario

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
def _readers(worker: Worker, scenario: Scenario, count: int) -> None:
    digests: list[tuple[int, str]] = []
    lock = threading.Lock()

    def run() -> None:
        digest, size = hashlib.sha256(), 0
        for chunk in worker.output(scenario.job):
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
    scenario.notes["digests"] = digests
    scenario.notes["readers"] = count


@then(parsers.parse("every reader received {size:d} bytes of stdout"))
def _sizes(scenario: Scenario, size: int) -> None:
    assert len(scenario.notes["digests"]) == scenario.notes["readers"]
    assert all(s == size for s, _ in scenario.notes["digests"]), scenario.notes["digests"]


@then("every reader's sha256 is the same")
def _same(scenario: Scenario) -> None:
    assert len({d for _, d in scenario.notes["digests"]}) == 1, scenario.notes["digests"]


@when("I start a job that prints every byte value 4 times")
def _all_bytes(worker: Worker, scenario: Scenario) -> None:
    scenario.notes["expected"] = bytes(range(256)) * 4
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4)"
    start(worker, scenario, ["python3", "-c", script])


@then("reading the output gives exactly those bytes")
def _exact(worker: Worker, scenario: Scenario) -> None:
    assert collected(worker, scenario.job)[Stream.STDOUT] == scenario.notes["expected"]


@then(
    parsers.parse('the output is stdout "{first}", then stderr "{second}", then stdout "{third}"')
)
def _ordered(worker: Worker, scenario: Scenario, first: str, second: str, third: str) -> None:
    chunks = [(c.stream, c.data) for c in worker.output(scenario.job)]
    assert chunks == [
        (Stream.STDOUT, unescape(first).encode()),
        (Stream.STDERR, unescape(second).encode()),
        (Stream.STDOUT, unescape(third).encode()),
    ]


@when("a reader follows the output")
def _a_reader(worker: Worker, scenario: Scenario) -> None:
    scenario.notes["reader"] = _follow_in_thread(worker, scenario.job)
    time.sleep(0.3)


@then(parsers.parse("the reader's stream ends within {seconds:g} seconds"))
def _ends(scenario: Scenario, seconds: float) -> None:
    began = time.monotonic()
    scenario.notes["reader"]["thread"].join(timeout=scaled(seconds))
    assert not scenario.notes["reader"]["thread"].is_alive(), "the stream did not end"
    assert scenario.notes["reader"]["ended_at"] - began <= scaled(seconds)


@then(parsers.parse('the reader received stdout "{text}"'))
def _received(scenario: Scenario, text: str) -> None:
    assert _stdout(scenario.notes["reader"]["chunks"]) == unescape(text).encode()


@then(parsers.parse('reading the output without following gives stdout "{text}"'))
def _no_follow(worker: Worker, scenario: Scenario, text: str) -> None:
    began = time.monotonic()
    out = collected(worker, scenario.job, follow=False)
    assert time.monotonic() - began < scaled(2)
    assert out[Stream.STDOUT] == unescape(text).encode()
