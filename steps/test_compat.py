"""Steps for features/compat.feature: a client that knows only the reference's job.proto.

The client's message classes come from tests/refproto/job.proto, compiled at run time into a
descriptor pool of their own (the names clash with jobmgr's job.proto in the default pool),
and its calls are plain method paths with those classes' serializers: nothing of jobmgr's
generated code is used.
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
from pytest_bdd import given, parsers, scenarios, then, when

from ._grpc_steps import *  # noqa: F403  # the shared steps
from ._grpc_steps import ApiScenario, CallResult, call, unescape
from .fixtures_server import RunningServer

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
    """The reference's four calls, made from its own message classes."""

    channel: grpc.Channel
    messages: dict[str, type[Any]]

    def _method(self, name: str, streaming: bool = False) -> Callable[..., Any]:
        request, response = self.messages[f"{name}Request"], self.messages[f"{name}Response"]
        make = self.channel.unary_stream if streaming else self.channel.unary_unary
        method: Callable[..., Any] = make(
            f"/job.JobManager/{name}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        return method

    def start(self, argv: list[str]) -> CallResult:
        request = self.messages["StartRequest"](cmd=argv[0] if argv else "", args=argv[1:])
        return call(self._method("Start"), request)

    def stop(self, job_id: str) -> CallResult:
        return call(self._method("Stop"), self.messages["StopRequest"](uuid=job_id))

    def status(self, job_id: str) -> CallResult:
        return call(self._method("Status"), self.messages["StatusRequest"](uuid=job_id))

    def output(self, job_id: str) -> CallResult:
        request = self.messages["OutputRequest"](uuid=job_id)
        return call(self._method("Output", streaming=True), request)


@given(
    "a client built from the reference's job.proto alone, holding the admin certificate",
    target_fixture="reference",
)
def _reference_client(
    job_server: RunningServer, reference_messages: dict[str, type[Any]]
) -> ReferenceClient:
    return ReferenceClient(job_server.channel("admin"), reference_messages)


@when(parsers.parse('the reference client starts "{command}"'))
def _starts(reference: ReferenceClient, api: ApiScenario, command: str) -> None:
    api.result = reference.start(shlex.split(command))
    if api.result.code == grpc.StatusCode.OK:
        api.job = api.result.value.uuid


@when("the reference client starts an empty command")
def _starts_empty(reference: ReferenceClient, api: ApiScenario) -> None:
    api.result = reference.start([])


@when("the reference client reads the job's output")
def _reads(reference: ReferenceClient, api: ApiScenario) -> None:
    api.result = reference.output(api.job)


@when("the reference client asks for the job's status")
def _asks(reference: ReferenceClient, api: ApiScenario) -> None:
    api.result = reference.status(api.job)


@when("the reference client stops the job")
def _stops(reference: ReferenceClient, api: ApiScenario) -> None:
    api.result = reference.stop(api.job)


@when(parsers.parse("the reference client asks for the status of job {job_id}"))
def _asks_for(reference: ReferenceClient, api: ApiScenario, job_id: str) -> None:
    api.result = reference.status(job_id)


@when(parsers.parse("the reference client reads the output of job {job_id}"))
def _reads_of(reference: ReferenceClient, api: ApiScenario, job_id: str) -> None:
    api.result = reference.output(job_id)


@when(parsers.parse("the reference client stops job {job_id}"))
def _stops_job(reference: ReferenceClient, api: ApiScenario, job_id: str) -> None:
    api.result = reference.stop(job_id)


@then(parsers.parse('the reference output is "{text}"'))
def _output_is(api: ApiScenario, text: str) -> None:
    assert api.last.code == grpc.StatusCode.OK, api.last
    assert b"".join(m.output for m in api.last.value) == unescape(text).encode()


@then(
    parsers.parse('it reads status "{status}", terminated {terminated} and exit_code {exit_code:d}')
)
def _reads_status(api: ApiScenario, status: str, terminated: str, exit_code: int) -> None:
    assert api.last.code == grpc.StatusCode.OK, api.last
    reply = api.last.value
    assert (reply.status, reply.terminated, reply.exit_code) == (
        status,
        terminated == "true",
        exit_code,
    ), reply


@then("the stop succeeds with an empty StopResponse")
def _stop_ok(api: ApiScenario) -> None:
    assert api.last.code == grpc.StatusCode.OK, api.last
    # The reference's StopResponse has no fields: what jobmgr adds is unknown to it, kept aside.
    assert api.last.value.ListFields() == []


@then(parsers.parse('the reference client gets {code} with a message containing "{words}"'))
def _gets(api: ApiScenario, code: str, words: str) -> None:
    assert api.last.code == grpc.StatusCode[code], api.last
    assert words in api.last.details, api.last.details
