"""Steps and helpers shared by the service scenarios (auth_roles, streaming, tls, compat).

A step module pulls the steps in with ``from ._grpc_steps import *``: pytest-bdd registers a
step as a fixture in the module that defines it, so it has to be imported, not just named.
"""

from __future__ import annotations

import codecs
import re
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from pytest_bdd import given, parsers, then, when

from jobmgr.api import job_pb2

from ._identity_subject import subject_of
from .fixtures_pki import CLIENT_KINDS
from .fixtures_server import RunningServer, ServerProcess

CALL_TIMEOUT = 30.0


# Matches only the certificate kinds of fixtures_pki, so that "the reference client" of
# another module's step is not mistaken for one.
KIND = "(?P<kind>" + "|".join(re.escape(kind) for kind in CLIENT_KINDS) + ")"


def unescape(text: str) -> str:
    """Feature files write a newline as \\n."""
    return codecs.decode(text, "unicode_escape")


@dataclass
class CallResult:
    """How one RPC went: its status code, details and (on success) its value."""

    code: grpc.StatusCode
    details: str = ""
    value: Any = None


def call(method: Callable[..., Any], request: Any, *, timeout: float = CALL_TIMEOUT) -> CallResult:
    """Make a unary call, or drain a streaming one into a list, catching its status."""
    try:
        value = method(request, timeout=timeout)
        if not hasattr(value, "SerializeToString"):  # a response stream
            value = list(value)
    except grpc.RpcError as exc:
        return CallResult(exc.code(), exc.details() or "")
    return CallResult(grpc.StatusCode.OK, "", value)


def collect(messages: Iterable[job_pb2.OutputResponse]) -> dict[str, bytes]:
    """Output messages joined per stream."""
    out = {"stdout": b"", "stderr": b""}
    for message in messages:
        out["stderr" if message.stream == job_pb2.STREAM_STDERR else "stdout"] += message.output
    return out


def start_job(server: RunningServer, command: str, kind: str = "admin") -> str:
    argv = shlex.split(command)
    reply = server.stub(kind).Start(
        job_pb2.StartRequest(cmd=argv[0], args=argv[1:]), timeout=CALL_TIMEOUT
    )
    return str(reply.uuid)


def wait_until_ended(server: RunningServer, job_id: str, timeout: float = 30.0) -> Any:
    """Follow the job's output to its end, then return its final status."""
    stub = server.stub("admin")
    for _ in stub.Output(job_pb2.OutputRequest(uuid=job_id), timeout=timeout):
        pass
    status = stub.Status(job_pb2.StatusRequest(uuid=job_id), timeout=timeout)
    assert status.state != job_pb2.JOB_STATE_RUNNING, f"the output ended, not the job: {status}"
    return status


@dataclass
class ApiScenario:
    """What one service scenario's steps pass to each other."""

    job: str = ""
    result: CallResult | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def last(self) -> CallResult:
        assert self.result is not None, "no call was made"
        return self.result


@pytest.fixture
def api() -> ApiScenario:
    return ApiScenario()


# ---- given ------------------------------------------------------------------------------------


@given("a jobmgr server")
def _a_server(job_server: RunningServer) -> None:
    pass


@given("the jobmgr-server program is running")
def _program_running(server_process: ServerProcess, api: ApiScenario) -> None:
    api.notes["server_process"] = server_process


@given(parsers.parse('the admin has started "{command}"'))
def _admin_started(job_server: RunningServer, api: ApiScenario, command: str) -> None:
    api.job = start_job(job_server, command)


@given(parsers.parse('the admin has run "{command}" to the end'))
def _admin_ran(job_server: RunningServer, api: ApiScenario, command: str) -> None:
    api.job = start_job(job_server, command)
    wait_until_ended(job_server, api.job)


# ---- when -------------------------------------------------------------------------------------


@when(parsers.re(f'the {KIND} client starts "(?P<command>.+)"'))
def _client_starts(job_server: RunningServer, api: ApiScenario, kind: str, command: str) -> None:
    argv = shlex.split(command)
    api.result = call(job_server.stub(kind).Start, job_pb2.StartRequest(cmd=argv[0], args=argv[1:]))
    if api.result.code == grpc.StatusCode.OK:
        api.job = api.result.value.uuid


@when(parsers.re(f"the {KIND} client stops that job"))
def _client_stops(job_server: RunningServer, api: ApiScenario, kind: str) -> None:
    api.result = call(job_server.stub(kind).Stop, job_pb2.StopRequest(uuid=api.job))


@when(parsers.re(f"the {KIND} client asks for the job's status"))
def _client_status(job_server: RunningServer, api: ApiScenario, kind: str) -> None:
    api.result = call(job_server.stub(kind).Status, job_pb2.StatusRequest(uuid=api.job))


@when(parsers.re(f"the {KIND} client reads the job's output"))
def _client_reads(job_server: RunningServer, api: ApiScenario, kind: str) -> None:
    api.result = call(job_server.stub(kind).Output, job_pb2.OutputRequest(uuid=api.job))


@when(parsers.parse("I wait until the job has ended"))
def _until_ended(job_server: RunningServer, api: ApiScenario) -> None:
    wait_until_ended(job_server, api.job)


# ---- then -------------------------------------------------------------------------------------


@then("the call succeeds")
def _succeeds(api: ApiScenario) -> None:
    assert api.last.code == grpc.StatusCode.OK, api.last


@then(parsers.parse("the call fails with {code}"))
def _fails_with(api: ApiScenario, code: str) -> None:
    assert api.last.code == grpc.StatusCode[code], api.last


@then(parsers.parse('the error message mentions "{first}" and "{second}"'))
def _message_mentions(api: ApiScenario, first: str, second: str) -> None:
    details = api.last.details
    assert first in details and second in details, details


@then(parsers.parse('it receives stdout "{text}"'))
def _receives_stdout(api: ApiScenario, text: str) -> None:
    assert api.last.code == grpc.StatusCode.OK, api.last
    assert collect(api.last.value) == {"stdout": unescape(text).encode(), "stderr": b""}


@then(parsers.parse("the admin sees that job {state}"))
def _admin_sees_state(job_server: RunningServer, api: ApiScenario, state: str) -> None:
    status = job_server.stub("admin").Status(job_pb2.StatusRequest(uuid=api.job), timeout=10)
    assert status.state == job_pb2.JobState.Value(f"JOB_STATE_{state}"), status


@then(parsers.parse('the user sees that job owned by the {kind} certificate\'s Subject, "{shown}"'))
def _user_sees_owner(job_server: RunningServer, api: ApiScenario, kind: str, shown: str) -> None:
    status = job_server.stub("user").Status(job_pb2.StatusRequest(uuid=api.job), timeout=10)
    assert status.owner == subject_of(job_server.pki.client(kind)), status
    # The scenario's certificates carry an OU of trustme's making, which "..." stands for.
    assert re.fullmatch(re.escape(shown).replace(re.escape("..."), ".*"), status.owner), status


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.02)
