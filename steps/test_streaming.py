"""Steps for features/streaming.feature."""

from __future__ import annotations

import threading
import time

import grpc
from pytest_bdd import given, parsers, scenarios, then, when

from harness.rpc import call, collect
from jobmgr.api import job_pb2, job_pb2_grpc

from ._phrases import unescape
from .fixtures_scenario import Scenario

scenarios("streaming.feature")

MiB = 1024 * 1024


def _state(scenario: Scenario) -> str:
    """The job's state in jobmgr's words (RUNNING, EXITED, ...), as the admin reads it."""
    status = scenario.server.status(scenario.job, "admin")
    return job_pb2.JobState.Name(status.state).removeprefix("JOB_STATE_")


@given("the admin has started a job writing 3 MiB of random bytes in three bursts")
def _three_bursts(scenario: Scenario) -> None:
    script = "for i in 1 2 3; do head -c 1048576 /dev/urandom; sleep 0.3; done"
    scenario.job = scenario.server.start_job(["sh", "-c", script])


@when("the user client follows the job's output")
def _follows(scenario: Scenario) -> None:
    stub = scenario.server.stub("user")
    arrivals: list[tuple[bytes, str]] = []  # (bytes, job state when they arrived)
    for message in stub.Output(job_pb2.OutputRequest(uuid=scenario.job), timeout=30):
        arrivals.append((message.output, _state(scenario)))
    scenario.notes["arrivals"] = arrivals
    scenario.notes["state_at_end"] = _state(scenario)


@when("the user client reads the job's output without following it")
def _no_follow(scenario: Scenario) -> None:
    stub = scenario.server.stub("user")
    began = time.monotonic()
    scenario.result = call(stub.Output, job_pb2.OutputRequest(uuid=scenario.job, no_follow=True))
    assert time.monotonic() - began < 5, "the stream did not end promptly"


@when(parsers.parse("{count:d} user clients read the job's output at the same time"))
def _concurrent_readers(scenario: Scenario, count: int) -> None:
    # Each reader on a connection of its own.
    stubs = [job_pb2_grpc.JobManagerStub(scenario.server.channel("user")) for _ in range(count)]
    results: list[list[job_pb2.OutputResponse] | BaseException] = [[] for _ in stubs]
    barrier = threading.Barrier(count)

    def read(index: int) -> None:
        try:
            barrier.wait(10)
            request = job_pb2.OutputRequest(uuid=scenario.job)
            results[index] = list(stubs[index].Output(request, timeout=60))
        except BaseException as exc:  # reported by the Then step
            results[index] = exc

    threads = [threading.Thread(target=read, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    scenario.notes["readers"] = results


@then(parsers.parse('"{text}" arrives while the job is still running'))
def _arrives_live(scenario: Scenario, text: str) -> None:
    arrivals = scenario.notes["arrivals"]
    assert arrivals, "no output arrived"
    first_bytes, state = arrivals[0]
    assert first_bytes.startswith(unescape(text).encode()), arrivals
    assert state == "RUNNING", f"the first output arrived when the job was {state}"


@then("the stream ends only after the job has ended")
def _ends_after(scenario: Scenario) -> None:
    assert scenario.notes["state_at_end"] == "EXITED", scenario.notes["state_at_end"]


@then(parsers.parse('the whole stdout is "{text}"'))
def _whole_stdout(scenario: Scenario, text: str) -> None:
    assert b"".join(data for data, _ in scenario.notes["arrivals"]) == unescape(text).encode()


@then("every message is tagged stdout or stderr")
def _tagged(scenario: Scenario) -> None:
    assert scenario.last.code == grpc.StatusCode.OK, scenario.last
    streams = {message.stream for message in scenario.last.value}
    assert streams == {job_pb2.STREAM_STDOUT, job_pb2.STREAM_STDERR}, streams


@then(parsers.parse('the stdout is "{stdout}" and the stderr is "{stderr}"'))
def _both_streams(scenario: Scenario, stdout: str, stderr: str) -> None:
    got = collect(scenario.last.value)
    assert got == {"stdout": unescape(stdout).encode(), "stderr": unescape(stderr).encode()}


@then(parsers.parse("all {count:d} receive the same {size:d} bytes"))
def _same_bytes(scenario: Scenario, count: int, size: int) -> None:
    readers = scenario.notes["readers"]
    errors = [r for r in readers if isinstance(r, BaseException)]
    assert not errors, errors
    outputs = [collect(messages)["stdout"] for messages in readers]
    assert len(outputs) == count
    assert all(len(out) == size for out in outputs), [len(out) for out in outputs]
    assert all(out == outputs[0] for out in outputs), "readers got different bytes"


@then("no message carries more than 1 MiB")
def _message_size(scenario: Scenario) -> None:
    sizes = [len(m.output) for messages in scenario.notes["readers"] for m in messages]
    assert max(sizes) <= MiB, max(sizes)


@when(
    parsers.parse(
        "{count:d} user clients in turn read the first message of the job's output and hang up"
    )
)
def _hang_ups(scenario: Scenario, count: int) -> None:
    for _ in range(count):
        with scenario.server.channel("user") as channel:
            stream = job_pb2_grpc.JobManagerStub(channel).Output(
                job_pb2.OutputRequest(uuid=scenario.job), timeout=10
            )
            first = next(stream)
            assert first.output, first
            stream.cancel()


@then("the user can still read the job's status, and it is RUNNING")
def _still_running(scenario: Scenario) -> None:
    assert _state(scenario) == "RUNNING"
