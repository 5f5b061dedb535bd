"""Fixtures and shared steps for scenarios that drive the worker library directly."""

from __future__ import annotations

import codecs
import glob
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, then, when

from jobmgr.worker import (
    InvalidSpec,
    JobNotFound,
    JobSpec,
    JobState,
    JobStatus,
    Limits,
    Sandbox,
    Stream,
    Worker,
    WorkerError,
)

MiB = 1024 * 1024


def unescape(text: str) -> str:
    """Feature files write newlines as \\n."""
    return codecs.decode(text, "unicode_escape")


def cgroup_dirs(parent: str, name: str = "") -> list[str]:
    """Every directory of this parent (or job) in any mounted cgroup hierarchy."""
    pattern = f"/sys/fs/cgroup/*/{parent}" + (f"/{name}" if name else "")
    return glob.glob(pattern)


@pytest.fixture
def cgroup_parent(worker_id: str) -> str:
    return f"jobmgr-test-{worker_id}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker_sandbox() -> Sandbox:
    """The sandbox of the scenario's worker: the default (a module may override it)."""
    return Sandbox()


@pytest.fixture
def worker(tmp_path: Path, cgroup_parent: str, worker_sandbox: Sandbox) -> Iterator[Worker]:
    w = Worker(
        tmp_path / "state", cgroup_parent=cgroup_parent, default_grace=2.0, sandbox=worker_sandbox
    )
    launcher = w._launcher.process
    try:
        yield w
    finally:
        w.close()
    assert launcher is not None and launcher.poll() is not None, "the launcher outlived its worker"
    assert cgroup_dirs(cgroup_parent) == [], "cgroups outlived the worker"


@pytest.fixture
def ctx() -> dict[str, Any]:
    """What one scenario's steps pass to each other."""
    return {}


def wait_until_ended(worker: Worker, job_id: str, timeout: float = 60.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    for _ in worker.output(job_id):
        assert time.monotonic() < deadline, "the job did not end in time"
    status = worker.status(job_id)
    assert status.terminated, f"output ended but the job is {status.state}"
    return status


def collected(worker: Worker, job_id: str, *, follow: bool = True) -> dict[Stream, bytes]:
    out: dict[Stream, bytes] = {Stream.STDOUT: b"", Stream.STDERR: b""}
    for chunk in worker.output(job_id, follow=follow):
        out[chunk.stream] += chunk.data
    return out


def start(
    worker: Worker, ctx: dict[str, Any], argv: list[str], limits: Limits | None = None
) -> str:
    ctx["job"] = worker.start(JobSpec(argv, limits=limits or Limits()))
    return str(ctx["job"])


# ---- shared steps ----------------------------------------------------------------------------


@given("a worker")
def _a_worker(worker: Worker) -> None:
    pass


@when(parsers.parse('I start "{command}"'))
def _start(worker: Worker, ctx: dict[str, Any], command: str) -> None:
    start(worker, ctx, shlex.split(command))


_LIMIT_STEPS = {
    "memory limit of {value:d} MiB": lambda v: Limits(memory_bytes=v * MiB),
    "CPU limit of {value:g}": lambda v: Limits(cpu=v),
    "pids limit of {value:d}": lambda v: Limits(pids=v),
}
for _phrase, _make in _LIMIT_STEPS.items():

    def _start_limited(
        worker: Worker, ctx: dict[str, Any], command: str, value: float, _make: Any = _make
    ) -> None:
        start(worker, ctx, shlex.split(command), _make(value))

    when(parsers.parse(f'I start "{{command}}" with a {_phrase}'))(_start_limited)


@when(parsers.parse('I try to start "{command}"'))
def _try_start_step(worker: Worker, ctx: dict[str, Any], command: str) -> None:
    try_start(worker, ctx, command)


def try_start(worker: Worker, ctx: dict[str, Any], command: str) -> None:
    ctx["started_at"] = time.monotonic()
    try:
        ctx["job"] = worker.start(JobSpec(shlex.split(command)))
    except WorkerError as exc:
        ctx["error"] = exc


@when("I try to start an empty command")
def _try_empty(worker: Worker, ctx: dict[str, Any]) -> None:
    try_start(worker, ctx, "")


@when(parsers.parse('the job has printed "{text}"'))
def _printed(worker: Worker, ctx: dict[str, Any], text: str) -> None:
    want = unescape(text).encode()
    got = b""
    for chunk in worker.output(ctx["job"]):
        got += chunk.data
        if got == want:
            return
    raise AssertionError(f"the job ended having printed {got!r}")


@when("the job ends")
def _job_ends(worker: Worker, ctx: dict[str, Any]) -> None:
    ctx["status"] = wait_until_ended(worker, ctx["job"])


@when(parsers.parse("I stop the job with a grace period of {grace:g} second"))
@when(parsers.parse("I stop the job with a grace period of {grace:g} seconds"))
def _stop(worker: Worker, ctx: dict[str, Any], grace: float) -> None:
    began = time.monotonic()
    ctx["status"] = worker.stop(ctx["job"], grace=grace)
    ctx["stop_took"] = time.monotonic() - began


@when(parsers.parse("I wait {seconds:g} seconds"))
def _wait(seconds: float) -> None:
    time.sleep(seconds)


@then(parsers.parse("the job's state is {state}"))
def _state_is(worker: Worker, ctx: dict[str, Any], state: str) -> None:
    assert worker.status(ctx["job"]).state is JobState[state]


@then(parsers.parse("its exit code is {code:d}"))
def _exit_code(worker: Worker, ctx: dict[str, Any], code: int) -> None:
    status = worker.status(ctx["job"])
    assert status.exit_code == code, status


@then(parsers.parse("it was ended by signal {signo:d}"))
def _ended_by(worker: Worker, ctx: dict[str, Any], signo: int) -> None:
    status = worker.status(ctx["job"])
    assert status.signal == signo, status


@then(parsers.parse('reading the output gives stdout "{text}"'))
def _output_is(worker: Worker, ctx: dict[str, Any], text: str) -> None:
    out = collected(worker, ctx["job"])
    assert out[Stream.STDOUT] == unescape(text).encode()
    assert out[Stream.STDERR] == b""


@then(parsers.parse('the start fails naming "{first}" and "{second}"'))
def _start_fails(ctx: dict[str, Any], first: str, second: str) -> None:
    error = ctx.get("error")
    assert error is not None, "the start succeeded"
    assert first in str(error) and second in str(error), str(error)
    assert time.monotonic() - ctx["started_at"] < 5


@then("the start is refused as invalid")
def _start_invalid(ctx: dict[str, Any]) -> None:
    assert isinstance(ctx.get("error"), InvalidSpec), ctx.get("error")


@then("the worker says no such job exists")
def _not_found(ctx: dict[str, Any]) -> None:
    assert isinstance(ctx.get("error"), JobNotFound), ctx.get("error")
