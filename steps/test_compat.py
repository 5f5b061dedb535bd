"""Steps for features/compat.feature: a client that knows only the reference's job.proto.

The client's message classes come from tests/refproto/job.proto, compiled at run time into a
descriptor pool of their own (the names clash with jobmgr's job.proto in the default pool),
and its calls are plain method paths with those classes' serializers: nothing of jobmgr's
generated code is used. Steps that say "jobmgr's own client" use jobmgr's generated code on
the same server, for what the reference cannot ask (limits, a timeout) or does not know (the
job's state in jobmgr's words).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.duration_pb2 import Duration
from pytest_bdd import given, parsers, scenarios, then, when

from harness.inprocess import RunningServer
from harness.poll import eventually
from harness.rpc import CALL_TIMEOUT, CallResult, call, collect
from jobmgr.api import job_pb2, job_pb2_grpc

from ._phrases import unescape
from .fixtures_scenario import Scenario

scenarios("compat.feature")

REFERENCE_PROTO = Path(__file__).resolve().parent.parent / "tests" / "refproto" / "job.proto"


@pytest.fixture(scope="session")
def reference_messages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, type[Any]]:
    """The reference's message classes, by name, built from its job.proto alone."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out = tmp_path_factory.mktemp("refproto") / "job.desc"
    status = protoc.main(
        ["protoc", f"-I{REFERENCE_PROTO.parent}", f"--descriptor_set_out={out}", "job.proto"]
    )
    assert status == 0, f"protoc failed on {REFERENCE_PROTO}"
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    names = [m.name for file in files.file for m in file.message_type]
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"job.{name}"))
        for name in names
    }


@dataclass
class ReferenceClient:
    """The reference's four calls, made from its own message classes.

    Each call takes a channel of its own from ``connect``, so that the client follows a
    jobmgr-server that was restarted on another port.
    """

    connect: Callable[[], grpc.Channel]
    messages: dict[str, type[Any]]

    def _call(self, name: str, request: Any, streaming: bool = False) -> CallResult:
        response = self.messages[f"{name}Response"]
        with self.connect() as channel:
            make = channel.unary_stream if streaming else channel.unary_unary
            method: Callable[..., Any] = make(
                f"/job.JobManager/{name}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )
            return call(method, request)

    def start(self, argv: list[str]) -> CallResult:
        request = self.messages["StartRequest"](cmd=argv[0] if argv else "", args=argv[1:])
        return self._call("Start", request)

    def stop(self, job_id: str) -> CallResult:
        return self._call("Stop", self.messages["StopRequest"](uuid=job_id))

    def status(self, job_id: str) -> CallResult:
        return self._call("Status", self.messages["StatusRequest"](uuid=job_id))

    def output(self, job_id: str) -> CallResult:
        return self._call("Output", self.messages["OutputRequest"](uuid=job_id), streaming=True)

    def jobmgr_status(self, job_id: str) -> job_pb2.StatusResponse:
        """The job's status as jobmgr's own client reads it, from the same server."""
        with self.connect() as channel:
            stub = job_pb2_grpc.JobManagerStub(channel)
            status: job_pb2.StatusResponse = stub.Status(
                job_pb2.StatusRequest(uuid=job_id), timeout=CALL_TIMEOUT
            )
            return status


@given(
    "a client built from the reference's job.proto alone, holding the admin certificate",
    target_fixture="reference",
)
def _reference_client(
    job_server: RunningServer, reference_messages: dict[str, type[Any]]
) -> ReferenceClient:
    return ReferenceClient(lambda: job_server.channel("admin"), reference_messages)


@given(
    "a client built from the reference's job.proto alone, holding the admin certificate, "
    "for that program",
    target_fixture="reference",
)
def _reference_client_of_program(
    scenario: Scenario, reference_messages: dict[str, type[Any]]
) -> ReferenceClient:
    return ReferenceClient(lambda: scenario.program.channel("admin"), reference_messages)


@when(parsers.parse('the reference client starts "{command}"'))
def _starts(reference: ReferenceClient, scenario: Scenario, command: str) -> None:
    scenario.result = reference.start(shlex.split(command))
    if scenario.result.code == grpc.StatusCode.OK:
        scenario.job = scenario.result.value.uuid


@when("the reference client starts an empty command")
def _starts_empty(reference: ReferenceClient, scenario: Scenario) -> None:
    scenario.result = reference.start([])


@when("the reference client reads the job's output")
def _reads(reference: ReferenceClient, scenario: Scenario) -> None:
    scenario.result = reference.output(scenario.job)


@when("the reference client asks for the job's status")
def _asks(reference: ReferenceClient, scenario: Scenario) -> None:
    scenario.result = reference.status(scenario.job)


@when("the reference client stops the job")
def _stops(reference: ReferenceClient, scenario: Scenario) -> None:
    scenario.result = reference.stop(scenario.job)


@when(parsers.parse('jobmgr\'s own client starts "{command}" with a memory limit of {mib:d} MiB'))
def _starts_with_memory(
    reference: ReferenceClient, scenario: Scenario, command: str, mib: int
) -> None:
    limits = job_pb2.Limits(memory_bytes=mib * 1024 * 1024)
    scenario.job = _jobmgr_start(reference, command, limits=limits)


@when(parsers.parse('jobmgr\'s own client starts "{command}" with a timeout of {seconds:d} second'))
def _starts_with_timeout(
    reference: ReferenceClient, scenario: Scenario, command: str, seconds: int
) -> None:
    scenario.job = _jobmgr_start(reference, command, timeout=Duration(seconds=seconds))


def _jobmgr_start(reference: ReferenceClient, command: str, **settings: Any) -> str:
    argv = shlex.split(command)
    with reference.connect() as channel:
        stub = job_pb2_grpc.JobManagerStub(channel)
        request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:], **settings)
        return str(stub.Start(request, timeout=CALL_TIMEOUT).uuid)


@when(parsers.parse('the job has printed "{text}"'))
def _has_printed(reference: ReferenceClient, scenario: Scenario, text: str) -> None:
    want = unescape(text).encode() + b"\n"

    def printed() -> bool:
        with reference.connect() as channel:
            stub = job_pb2_grpc.JobManagerStub(channel)
            request = job_pb2.OutputRequest(uuid=scenario.job, no_follow=True)
            return collect(stub.Output(request, timeout=CALL_TIMEOUT))["stdout"] == want

    eventually(printed, 20, f"the job to print {want!r}")


@when(
    "jobmgr-server and then its launcher are killed with SIGKILL, and jobmgr-server is "
    "started again"
)
def _crash_with_launcher(scenario: Scenario) -> None:
    scenario.program.kill9_with_launcher()
    scenario.program.start()


@when(parsers.parse("the reference client asks for the status of job {job_id}"))
def _asks_for(reference: ReferenceClient, scenario: Scenario, job_id: str) -> None:
    scenario.result = reference.status(job_id)


@when(parsers.parse("the reference client reads the output of job {job_id}"))
def _reads_of(reference: ReferenceClient, scenario: Scenario, job_id: str) -> None:
    scenario.result = reference.output(job_id)


@when(parsers.parse("the reference client stops job {job_id}"))
def _stops_job(reference: ReferenceClient, scenario: Scenario, job_id: str) -> None:
    scenario.result = reference.stop(job_id)


@then(parsers.parse('the reference output is "{text}"'))
def _output_is(scenario: Scenario, text: str) -> None:
    assert scenario.last.code == grpc.StatusCode.OK, scenario.last
    assert b"".join(m.output for m in scenario.last.value) == unescape(text).encode()


@then(
    parsers.parse('it reads status "{status}", terminated {terminated} and exit_code {exit_code:d}')
)
def _reads_status(scenario: Scenario, status: str, terminated: str, exit_code: int) -> None:
    assert scenario.last.code == grpc.StatusCode.OK, scenario.last
    reply = scenario.last.value
    assert (reply.status, reply.terminated, reply.exit_code) == (
        status,
        terminated == "true",
        exit_code,
    ), reply


# jobmgr's state names are capitals only, so that the shorter sentences do not swallow the
# longer ones' tails.
JOBMGR_READS = r"jobmgr's own client reads state \"(?P<state>[A-Z]+)\""


def _jobmgr_state(
    reference: ReferenceClient, scenario: Scenario, state: str
) -> job_pb2.StatusResponse:
    status = reference.jobmgr_status(scenario.job)
    assert status.state == job_pb2.JobState.Value(f"JOB_STATE_{state}"), status
    return status


@then(parsers.re(f"{JOBMGR_READS}$"))
def _jobmgr_reads(reference: ReferenceClient, scenario: Scenario, state: str) -> None:
    _jobmgr_state(reference, scenario, state)


@then(parsers.re(rf"{JOBMGR_READS}, ended by signal (?P<signo>\d+)$"), converters={"signo": int})
def _jobmgr_reads_signal(
    reference: ReferenceClient, scenario: Scenario, state: str, signo: int
) -> None:
    status = _jobmgr_state(reference, scenario, state)
    assert (status.signal, status.oom_killed) == (signo, False), status


@then(parsers.re(f"{JOBMGR_READS}, with the OOM flag set$"))
def _jobmgr_reads_oom(reference: ReferenceClient, scenario: Scenario, state: str) -> None:
    status = _jobmgr_state(reference, scenario, state)
    assert status.oom_killed, status


@then(parsers.re(f'{JOBMGR_READS}, with a reason mentioning "(?P<words>[^"]+)"$'))
def _jobmgr_reads_reason(
    reference: ReferenceClient, scenario: Scenario, state: str, words: str
) -> None:
    status = _jobmgr_state(reference, scenario, state)
    assert words in status.reason, status


@then("the stop succeeds with an empty StopResponse")
def _stop_ok(scenario: Scenario) -> None:
    assert scenario.last.code == grpc.StatusCode.OK, scenario.last
    # The reference's StopResponse has no fields: what jobmgr adds is unknown to it, kept aside.
    assert scenario.last.value.ListFields() == []


@then(parsers.parse('the reference client gets {code} with a message containing "{words}"'))
def _gets(scenario: Scenario, code: str, words: str) -> None:
    assert scenario.last.code == grpc.StatusCode[code], scenario.last
    assert words in scenario.last.details, scenario.last.details
