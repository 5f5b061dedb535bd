"""Steps shared by the scenarios that drive the worker library (lifecycle, output, isolation,
cgroups): starting, stopping and following jobs, and what their status says."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

from pytest_bdd import given, parsers, then, when

from harness.speed import scaled
from harness.worker import collected, wait_until_ended
from jobmgr.worker import (
    InvalidSpec,
    JobNotFound,
    JobSpec,
    JobState,
    Limits,
    Stream,
    Worker,
    WorkerError,
)

from ._phrases import MiB, unescape
from .fixtures_scenario import Scenario


def start(worker: Worker, scenario: Scenario, argv: list[str], limits: Limits | None = None) -> str:
    """Start ``argv``; it becomes the scenario's job."""
    scenario.job = worker.start(JobSpec(argv, limits=limits or Limits()))
    return scenario.job


def try_start(worker: Worker, scenario: Scenario, command: str) -> None:
    """Start ``command``, noting the error (in notes["error"]) if the worker refuses it."""
    scenario.notes["started_at"] = time.monotonic()
    try:
        scenario.job = worker.start(JobSpec(shlex.split(command)))
    except WorkerError as exc:
        scenario.notes["error"] = exc


# ---- given and when ---------------------------------------------------------------------------


@given("a worker")
def _a_worker(worker: Worker) -> None:
    pass


@when(parsers.parse('I start "{command}"'))
def _start(worker: Worker, scenario: Scenario, command: str) -> None:
    start(worker, scenario, shlex.split(command))


_LIMIT_STEPS: dict[str, Callable[[float], Limits]] = {
    "memory limit of {value:d} MiB": lambda v: Limits(memory_bytes=int(v) * MiB),
    "CPU limit of {value:g}": lambda v: Limits(cpu=v),
    "pids limit of {value:d}": lambda v: Limits(pids=int(v)),
}
for _phrase, _make in _LIMIT_STEPS.items():

    def _start_limited(
        worker: Worker,
        scenario: Scenario,
        command: str,
        value: float,
        _make: Callable[[float], Limits] = _make,
    ) -> None:
        start(worker, scenario, shlex.split(command), _make(value))

    when(parsers.parse(f'I start "{{command}}" with a {_phrase}'))(_start_limited)


@when(parsers.parse('I try to start "{command}"'))
def _try_start(worker: Worker, scenario: Scenario, command: str) -> None:
    try_start(worker, scenario, command)


@when("I try to start an empty command")
def _try_empty(worker: Worker, scenario: Scenario) -> None:
    try_start(worker, scenario, "")


@when(parsers.parse('the job has printed "{text}"'))
def _printed(worker: Worker, scenario: Scenario, text: str) -> None:
    want = unescape(text).encode()
    got = b""
    for chunk in worker.output(scenario.job):
        got += chunk.data
        if got == want:
            return
    raise AssertionError(f"the job ended having printed {got!r}")


@when("the job ends")
def _job_ends(worker: Worker, scenario: Scenario) -> None:
    scenario.notes["status"] = wait_until_ended(worker, scenario.job)


@when(parsers.parse("I stop the job with a grace period of {grace:g} second"))
@when(parsers.parse("I stop the job with a grace period of {grace:g} seconds"))
def _stop(worker: Worker, scenario: Scenario, grace: float) -> None:
    began = time.monotonic()
    scenario.notes["status"] = worker.stop(scenario.job, grace=grace)
    scenario.notes["stop_took"] = time.monotonic() - began


@when(parsers.parse("I wait {seconds:g} seconds"))
def _wait(seconds: float) -> None:
    time.sleep(seconds)


# ---- then -------------------------------------------------------------------------------------


@then(parsers.parse("the job's state is {state}"))
def _state_is(worker: Worker, scenario: Scenario, state: str) -> None:
    assert worker.status(scenario.job).state is JobState[state]


@then(parsers.parse("its exit code is {code:d}"))
def _exit_code(worker: Worker, scenario: Scenario, code: int) -> None:
    status = worker.status(scenario.job)
    assert status.exit_code == code, status


@then(parsers.parse("it was ended by signal {signo:d}"))
def _ended_by(worker: Worker, scenario: Scenario, signo: int) -> None:
    status = worker.status(scenario.job)
    assert status.signal == signo, status


@then(parsers.parse('reading the output gives stdout "{text}"'))
def _output_is(worker: Worker, scenario: Scenario, text: str) -> None:
    out = collected(worker, scenario.job)
    assert out[Stream.STDOUT] == unescape(text).encode()
    assert out[Stream.STDERR] == b""


@then(parsers.parse('the start fails naming "{first}" and "{second}"'))
def _start_fails(scenario: Scenario, first: str, second: str) -> None:
    error = scenario.notes.get("error")
    assert error is not None, "the start succeeded"
    assert first in str(error) and second in str(error), str(error)
    assert time.monotonic() - scenario.notes["started_at"] < scaled(5)


@then("the start is refused as invalid")
def _start_invalid(scenario: Scenario) -> None:
    assert isinstance(scenario.notes.get("error"), InvalidSpec), scenario.notes.get("error")


@then("the worker says no such job exists")
def _not_found(scenario: Scenario) -> None:
    assert isinstance(scenario.notes.get("error"), JobNotFound), scenario.notes.get("error")
