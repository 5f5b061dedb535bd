"""Steps shared by the scenarios that call the job API over gRPC as one certificate holder or
another (auth_roles, streaming, tls, compat, operator, ...): the server they call, the calls,
and the answers."""

from __future__ import annotations

import re
import shlex

import grpc
from pytest_bdd import given, parsers, then, when

from harness.inprocess import RunningServer
from harness.poll import eventually
from harness.rpc import call, collect
from harness.server import ServerProgram
from jobmgr.api import job_pb2

from ._phrases import KIND, unescape
from .fixtures_scenario import Scenario

# ---- given ------------------------------------------------------------------------------------


@given("a jobmgr server")
def _a_server(job_server: RunningServer, scenario: Scenario) -> None:
    scenario.server = job_server


@given("the jobmgr-server program is running")
def _program_running(server_process: ServerProgram, scenario: Scenario) -> None:
    scenario.server = server_process


@given(parsers.parse('the admin has started "{command}"'))
def _admin_started(scenario: Scenario, command: str) -> None:
    scenario.job = scenario.server.start_job(shlex.split(command))


@given(parsers.parse('the admin has run "{command}" to the end'))
def _admin_ran(scenario: Scenario, command: str) -> None:
    scenario.job = scenario.server.start_job(shlex.split(command))
    scenario.server.wait_ended(scenario.job)


# ---- when -------------------------------------------------------------------------------------


@when(parsers.re(f'the {KIND} client starts "(?P<command>.+)"'))
def _client_starts(scenario: Scenario, kind: str, command: str) -> None:
    argv = shlex.split(command)
    request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
    scenario.result = call(scenario.server.stub(kind).Start, request)
    if scenario.result.code == grpc.StatusCode.OK:
        scenario.job = scenario.result.value.uuid


@when(parsers.re(f"the {KIND} client stops that job"))
def _client_stops(scenario: Scenario, kind: str) -> None:
    request = job_pb2.StopRequest(uuid=scenario.job)
    scenario.result = call(scenario.server.stub(kind).Stop, request)


@when(parsers.re(f"the {KIND} client asks for the job's status"))
def _client_status(scenario: Scenario, kind: str) -> None:
    request = job_pb2.StatusRequest(uuid=scenario.job)
    scenario.result = call(scenario.server.stub(kind).Status, request)


@when(parsers.re(f"the {KIND} client reads the job's output"))
def _client_reads(scenario: Scenario, kind: str) -> None:
    request = job_pb2.OutputRequest(uuid=scenario.job)
    scenario.result = call(scenario.server.stub(kind).Output, request)


@given(parsers.parse('the job has written "{text}"'))
@when(parsers.parse('the job has written "{text}"'))
def _has_written(scenario: Scenario, text: str) -> None:
    want = unescape(text).encode()
    stub = scenario.server.stub("admin")

    def written() -> bool:
        request = job_pb2.OutputRequest(uuid=scenario.job, no_follow=True)
        return collect(stub.Output(request, timeout=10))["stdout"] == want

    eventually(written, 20, f"the job to write {want!r}")


@when(parsers.parse("I wait until the job has ended"))
def _until_ended(scenario: Scenario) -> None:
    scenario.server.wait_ended(scenario.job)


# ---- then -------------------------------------------------------------------------------------


@then("the call succeeds")
def _succeeds(scenario: Scenario) -> None:
    assert scenario.last.code == grpc.StatusCode.OK, scenario.last


@then(parsers.parse("the call fails with {code}"))
def _fails_with(scenario: Scenario, code: str) -> None:
    assert scenario.last.code == grpc.StatusCode[code], scenario.last


@then(parsers.parse('the error message mentions "{first}" and "{second}"'))
def _message_mentions(scenario: Scenario, first: str, second: str) -> None:
    details = scenario.last.details
    assert first in details and second in details, details


@then(parsers.parse('it receives stdout "{text}"'))
def _receives_stdout(scenario: Scenario, text: str) -> None:
    assert scenario.last.code == grpc.StatusCode.OK, scenario.last
    assert collect(scenario.last.value) == {"stdout": unescape(text).encode(), "stderr": b""}


@then(parsers.parse("the admin sees that job {state}"))
def _admin_sees_state(scenario: Scenario, state: str) -> None:
    status = scenario.server.status(scenario.job, "admin")
    assert status.state == job_pb2.JobState.Value(f"JOB_STATE_{state}"), status


@then(parsers.parse('the user sees that job owned by the {kind} certificate\'s Subject, "{shown}"'))
def _user_sees_owner(scenario: Scenario, kind: str, shown: str) -> None:
    status = scenario.server.status(scenario.job, "user")
    assert status.owner == scenario.server.pki.client(kind).subject, status
    # The scenario's certificates carry an OU of trustme's making, which "..." stands for.
    assert re.fullmatch(re.escape(shown).replace(re.escape("..."), ".*"), status.owner), status
