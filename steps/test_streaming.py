"""Steps for features/streaming.feature."""

from __future__ import annotations

import threading
import time

import grpc
from pytest_bdd import given, parsers, scenarios, then, when

from jobmgr.api import job_pb2, job_pb2_grpc

from ._grpc_steps import *  # noqa: F403  # the shared steps
from ._grpc_steps import ApiScenario, call, collect, eventually, start_job, unescape
from .fixtures_server import RunningServer

scenarios("streaming.feature")

MiB = 1024 * 1024


def _state(server: RunningServer, job_id: str) -> str:
    """The job's state in jobmgr's words (RUNNING, EXITED, ...), as the admin reads it."""
    status = server.stub("admin").Status(job_pb2.StatusRequest(uuid=job_id), timeout=10)
    return job_pb2.JobState.Name(status.state).removeprefix("JOB_STATE_")


@given("the admin has started a job writing 3 MiB of random bytes in three bursts")
def _three_bursts(job_server: RunningServer, api: ApiScenario) -> None:
    api.job = start_job(
        job_server,
        "sh -c 'for i in 1 2 3; do head -c 1048576 /dev/urandom; sleep 0.3; done'",
    )


@given(parsers.parse('the job has written "{text}"'))
def _has_written(job_server: RunningServer, api: ApiScenario, text: str) -> None:
    want = unescape(text).encode()
    stub = job_server.stub("admin")

    def written() -> bool:
        messages = stub.Output(job_pb2.OutputRequest(uuid=api.job, no_follow=True), timeout=10)
        return collect(messages)["stdout"] == want

    eventually(written, what=f"the job to write {want!r}")


@when("the user client follows the job's output")
def _follows(job_server: RunningServer, api: ApiScenario) -> None:
    stub = job_server.stub("user")
    arrivals: list[tuple[bytes, str]] = []  # (bytes, job state when they arrived)
    for message in stub.Output(job_pb2.OutputRequest(uuid=api.job), timeout=30):
        arrivals.append((message.output, _state(job_server, api.job)))
    api.notes["arrivals"] = arrivals
    api.notes["state_at_end"] = _state(job_server, api.job)


@when("the user client reads the job's output without following it")
def _no_follow(job_server: RunningServer, api: ApiScenario) -> None:
    stub = job_server.stub("user")
    began = time.monotonic()
    api.result = call(stub.Output, job_pb2.OutputRequest(uuid=api.job, no_follow=True))
    assert time.monotonic() - began < 5, "the stream did not end promptly"


@when(parsers.parse("{count:d} user clients read the job's output at the same time"))
def _concurrent_readers(job_server: RunningServer, api: ApiScenario, count: int) -> None:
    stubs = [job_server.stub("user") for _ in range(count)]
    results: list[list[job_pb2.OutputResponse] | BaseException] = [[] for _ in stubs]
    barrier = threading.Barrier(count)

    def read(index: int) -> None:
        try:
            barrier.wait(10)
            request = job_pb2.OutputRequest(uuid=api.job)
            results[index] = list(stubs[index].Output(request, timeout=60))
        except BaseException as exc:  # reported by the Then step
            results[index] = exc

    threads = [threading.Thread(target=read, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    api.notes["readers"] = results


@then(parsers.parse('"{text}" arrives while the job is still running'))
def _arrives_live(api: ApiScenario, text: str) -> None:
    arrivals = api.notes["arrivals"]
    assert arrivals, "no output arrived"
    first_bytes, state = arrivals[0]
    assert first_bytes.startswith(unescape(text).encode()), arrivals
    assert state == "RUNNING", f"the first output arrived when the job was {state}"


@then("the stream ends only after the job has ended")
def _ends_after(api: ApiScenario) -> None:
    assert api.notes["state_at_end"] == "EXITED", api.notes["state_at_end"]


@then(parsers.parse('the whole stdout is "{text}"'))
def _whole_stdout(api: ApiScenario, text: str) -> None:
    assert b"".join(data for data, _ in api.notes["arrivals"]) == unescape(text).encode()


@then("every message is tagged stdout or stderr")
def _tagged(api: ApiScenario) -> None:
    assert api.last.code == grpc.StatusCode.OK, api.last
    streams = {message.stream for message in api.last.value}
    assert streams == {job_pb2.STREAM_STDOUT, job_pb2.STREAM_STDERR}, streams


@then(parsers.parse('the stdout is "{stdout}" and the stderr is "{stderr}"'))
def _both_streams(api: ApiScenario, stdout: str, stderr: str) -> None:
    got = collect(api.last.value)
    assert got == {"stdout": unescape(stdout).encode(), "stderr": unescape(stderr).encode()}


@then(parsers.parse("all {count:d} receive the same {size:d} bytes"))
def _same_bytes(api: ApiScenario, count: int, size: int) -> None:
    readers = api.notes["readers"]
    errors = [r for r in readers if isinstance(r, BaseException)]
    assert not errors, errors
    outputs = [collect(messages)["stdout"] for messages in readers]
    assert len(outputs) == count
    assert all(len(out) == size for out in outputs), [len(out) for out in outputs]
    assert all(out == outputs[0] for out in outputs), "readers got different bytes"


@then("no message carries more than 1 MiB")
def _message_size(api: ApiScenario) -> None:
    sizes = [len(m.output) for messages in api.notes["readers"] for m in messages]
    assert max(sizes) <= MiB, max(sizes)


@when(
    parsers.parse(
        "{count:d} user clients in turn read the first message of the job's output and hang up"
    )
)
def _hang_ups(job_server: RunningServer, api: ApiScenario, count: int) -> None:
    for _ in range(count):
        with job_server.channel("user") as channel:
            stream = job_pb2_grpc.JobManagerStub(channel).Output(
                job_pb2.OutputRequest(uuid=api.job), timeout=10
            )
            first = next(stream)
            assert first.output, first
            stream.cancel()


@then("the user can still read the job's status, and it is RUNNING")
def _still_running(job_server: RunningServer, api: ApiScenario) -> None:
    assert _state(job_server, api.job) == "RUNNING"
