"""Steps for features/security.feature."""

from __future__ import annotations

import os
import re
import uuid

import grpc
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import strategies as st
from pytest_bdd import given, parsers, scenarios, then, when

from harness.figures import report
from harness.poll import eventually
from harness.programs import run_program
from harness.rpc import call
from jobmgr.api import job_pb2, job_pb2_grpc

from ._generated_requests import PropertyRun, durations, run_property, start_requests, uuid_text
from ._phrases import KIND
from ._server_steps import mark_log, new_log
from .fixtures_scenario import Scenario

scenarios("security.feature")

# A job that writes each of its arguments as bytes, NUL-terminated: what it was really given.
PRINT_ARGS = (
    "import os, sys; "
    "sys.stdout.buffer.write(b''.join(os.fsencode(a) + b'\\0' for a in sys.argv[1:]))"
)
METHODS = ("Start", "Stop", "Status", "Output", "List", "Health", "Reflection")


# ---- roles ------------------------------------------------------------------------------------


@then(parsers.parse('the server logged the refused Start of "{caller}" as PERMISSION_DENIED'))
def _logged_refusal(scenario: Scenario, caller: str) -> None:
    def logged() -> bool:
        return any(
            "Start" in line and "PERMISSION_DENIED" in line and caller in line
            for line in new_log(scenario).splitlines()
        )

    try:
        eventually(logged, 5.0, "the log line")
    except AssertionError:
        raise AssertionError(
            f"the server's log has no line naming the Start call, {caller!r} and "
            f"PERMISSION_DENIED; it says:\n{new_log(scenario)[-2000:] or '(nothing)'}"
        ) from None


@when(parsers.re(f"the {KIND} client tries to start a job"))
def _try_start(scenario: Scenario, kind: str) -> None:
    server = scenario.program
    mark_log(scenario)
    argv = server.marked("sleep 30")
    scenario.notes["result"] = call(
        server.stub(kind).Start, job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
    )


@then(parsers.parse('the call fails with PERMISSION_DENIED saying "{says}"'))
def _denied_saying(scenario: Scenario, says: str) -> None:
    got = scenario.notes["result"]
    assert got.code == grpc.StatusCode.PERMISSION_DENIED and says in got.details, got


@given("the admin has started a job that prints a line every 0.1 seconds")
def _ticking(scenario: Scenario) -> None:
    scenario.job = scenario.program.start_job(
        scenario.program.marked("while :; do echo tick; sleep 0.1; done")
    )


def _first_output(stub: job_pb2_grpc.JobManagerStub, job_id: str) -> tuple[grpc.StatusCode, int]:
    """Open the job's Output stream: the code, and the bytes received before it ended or
    before we hung up after the first message."""
    stream = stub.Output(job_pb2.OutputRequest(uuid=job_id), timeout=10)
    received = 0
    try:
        for message in stream:
            received += len(message.output)
            stream.cancel()
            return grpc.StatusCode.OK, received
    except grpc.RpcError as exc:
        return exc.code(), received
    return grpc.StatusCode.OK, received


def _make_call(
    channel: grpc.Channel, method: str, job: str, marker: str
) -> tuple[grpc.StatusCode, int, str]:
    """One call of the matrix: its code, the bytes a stream carried, the id of a job started."""
    stub = job_pb2_grpc.JobManagerStub(channel)
    if method == "Output":
        code, received = _first_output(stub, job)
        return code, received, ""
    if method == "Health":
        health = health_pb2_grpc.HealthStub(channel)
        got = call(health.Check, health_pb2.HealthCheckRequest(service="job.JobManager"))
        return got.code, 0, ""
    if method == "Reflection":
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            replies = list(reflect.ServerReflectionInfo(iter([ask]), timeout=10))
        except grpc.RpcError as exc:
            return exc.code(), 0, ""
        return grpc.StatusCode.OK, sum(r.ByteSize() for r in replies), ""
    request = {
        "Start": job_pb2.StartRequest(cmd="sh", args=["-c", "true", marker]),
        "Stop": job_pb2.StopRequest(uuid=job, grace=Duration(seconds=1)),
        "Status": job_pb2.StatusRequest(uuid=job),
        "List": job_pb2.ListRequest(),
    }[method]
    got = call(getattr(stub, method), request)
    started = got.value.uuid if method == "Start" and got.code == grpc.StatusCode.OK else ""
    return got.code, 0, started


@when("each client below makes each call on that running job, the admin last")
def _matrix_calls(scenario: Scenario) -> None:
    pass  # the Then step has the table of clients, and makes the calls


@then("the answers are")
def _answers(scenario: Scenario, datatable: list[list[str]]) -> None:
    server = scenario.program
    header, *rows = datatable
    assert tuple(header[1:]) == METHODS, header
    assert rows[-1][0] == "admin", "the admin's row must come last: its Stop ends the job"
    mismatches, leaks, admin_jobs, states = [], [], [], []
    order = ("Start", "Status", "Output", "List", "Health", "Reflection", "Stop")  # Stop ends it
    for kind, *expected in rows:
        want = dict(zip(METHODS, expected, strict=True))
        channel = server.channel(kind)
        for method in order:
            code, received, started = _make_call(channel, method, scenario.job, server.marker)
            if started:
                admin_jobs.append((kind, started))
            if code != grpc.StatusCode[want[method]]:
                mismatches.append(f"{kind} {method}: want {want[method]}, got {code.name}")
            if code != grpc.StatusCode.OK and received:
                leaks.append(f"{kind} got {received} bytes of {method} before being refused")
        if kind != "admin":
            states.append((kind, server.status(scenario.job).state))
    assert not mismatches, "\n".join(mismatches)
    scenario.notes.update(leaks=leaks, started=admin_jobs, states=states)


@then("no refused Output stream carried a byte of output")
def _no_leak(scenario: Scenario) -> None:
    assert scenario.notes["leaks"] == [], scenario.notes["leaks"]


@then("the job kept running until the admin stopped it, and only the admin started a job")
def _admin_only(scenario: Scenario) -> None:
    server = scenario.program
    states = scenario.notes["states"]
    assert all(state == job_pb2.JOB_STATE_RUNNING for _, state in states), states
    assert server.status(scenario.job).state == job_pb2.JOB_STATE_STOPPED
    started = scenario.notes["started"]
    assert [kind for kind, _ in started] == ["admin"], started
    assert sorted(server.list_ids()) == sorted([scenario.job, started[0][1]])


@when(
    parsers.parse(
        "the user client sends {starts:d} generated Start requests and {stops:d} generated "
        "Stop requests"
    )
)
def _user_property(scenario: Scenario, starts: int, stops: int) -> None:
    server = scenario.program
    stub = server.stub("user")

    runs = [PropertyRun("user Start"), PropertyRun("user Stop")]

    def start_check(request: job_pb2.StartRequest) -> str:
        got = call(stub.Start, request)
        runs[0].saw(got.code)
        return "" if got.code == grpc.StatusCode.PERMISSION_DENIED else f"Start: {got.code}"

    stop_requests = st.builds(
        job_pb2.StopRequest,
        uuid=st.one_of(st.just(scenario.job), uuid_text),
        grace=st.one_of(st.none(), durations),
    )

    def stop_check(request: job_pb2.StopRequest) -> str:
        got = call(stub.Stop, request)
        runs[1].saw(got.code)
        return "" if got.code == grpc.StatusCode.PERMISSION_DENIED else f"Stop: {got.code}"

    run_property(runs[0], start_requests(), start_check, starts)
    run_property(runs[1], stop_requests, stop_check, stops)
    for run in runs:
        report(run.summary())
    scenario.notes["runs"] = runs


@then("every one of them fails with PERMISSION_DENIED")
def _all_denied(scenario: Scenario) -> None:
    for run in scenario.notes["runs"]:
        assert not run.violations, run.failures()


@then("the admin's job is still running and it is the only job")
def _still_alone(scenario: Scenario) -> None:
    server = scenario.program
    assert server.status(scenario.job).state == job_pb2.JOB_STATE_RUNNING
    assert server.list_ids() == [scenario.job]


@when("the user asks for that job's status and output, and for the list of jobs")
def _user_looks(scenario: Scenario) -> None:
    server = scenario.program
    stub = server.stub("user")
    nobody = str(uuid.uuid4())
    scenario.notes.update(
        status=call(stub.Status, job_pb2.StatusRequest(uuid=scenario.job)),
        unknown=call(stub.Status, job_pb2.StatusRequest(uuid=nobody)),
        nobody=nobody,
        output=_first_output(stub, scenario.job),
        lists=[
            call(stub.List, job_pb2.ListRequest()),
            call(stub.List, job_pb2.ListRequest(owner="client_admin")),
        ],
    )


@then("the status and the output are NOT_FOUND, word for word as for an id no job has")
def _not_found_alike(scenario: Scenario) -> None:
    notes = scenario.notes
    status, unknown = notes["status"], notes["unknown"]
    assert status.code == unknown.code == grpc.StatusCode.NOT_FOUND, (status, unknown)
    assert status.details.replace(scenario.job, "ID") == unknown.details.replace(
        notes["nobody"], "ID"
    ), (status.details, unknown.details)
    assert notes["output"][0] == grpc.StatusCode.NOT_FOUND, notes["output"]


@then("no byte of the job's output reached the user")
def _no_output_bytes(scenario: Scenario) -> None:
    assert scenario.notes["output"][1] == 0


@then("the user's list is empty, even when it asks for the admin's jobs by owner")
def _empty_lists(scenario: Scenario) -> None:
    for got in scenario.notes["lists"]:
        assert got.code == grpc.StatusCode.OK and list(got.value.jobs) == [], got


# ---- argv -------------------------------------------------------------------------------------


def _unescape(text: str) -> str:
    return re.sub(r"\\(n|\\)", lambda m: "\n" if m.group(1) == "n" else "\\", text)


@when("the admin starts python3 printing its arguments, with the arguments")
def _start_args(scenario: Scenario, datatable: list[list[str]]) -> None:
    args = [_unescape(row[0]) for row in datatable[1:]]
    scenario.job = scenario.program.start_job(["python3", "-c", PRINT_ARGS, *args])
    scenario.notes["expected"] = b"".join(arg.encode() + b"\0" for arg in args)


@when("the admin starts python3 printing its arguments through the raw argv field, with the bytes")
def _start_raw_argv(scenario: Scenario, datatable: list[list[str]]) -> None:
    args = [bytes.fromhex(row[0]) for row in datatable[1:]]
    argv = [b"python3", b"-c", PRINT_ARGS.encode(), *args]
    assert "argv" in job_pb2.StartRequest.DESCRIPTOR.fields_by_name, (
        "StartRequest has no raw `repeated bytes argv` field (issue 4)"
    )
    request = job_pb2.StartRequest(argv=argv)
    scenario.job = scenario.program.stub().Start(request, timeout=30).uuid
    scenario.notes.update(expected=b"".join(arg + b"\0" for arg in args), argv=argv)


@when(
    parsers.parse(
        'jobmgr-client starts python3 printing its arguments, with an argument of bytes "{hex}"'
    )
)
def _cli_start(scenario: Scenario, hex: str) -> None:
    arg = bytes.fromhex(hex)
    # subprocess passes a str argument as os.fsencode() of it: these very bytes.
    args = [*scenario.program.client_args(), "start", "--", "python3", "-c", PRINT_ARGS]
    done = run_program("jobmgr-client", *args, os.fsdecode(arg))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    scenario.job = done.stdout.decode().strip()
    scenario.notes["expected"] = arg + b"\0"


@then(parsers.re("the job received exactly (those arguments|those bytes|that argument)"))
def _received(scenario: Scenario) -> None:
    server = scenario.program
    status = server.wait_ended(scenario.job)
    assert (status.state, status.exit_code) == (job_pb2.JOB_STATE_EXITED, 0), status
    assert server.output(scenario.job) == scenario.notes["expected"]


@then("the job's status gives its argv back exactly in argv_bytes")
def _argv_bytes(scenario: Scenario) -> None:
    status = scenario.program.status(scenario.job)
    assert list(status.argv_bytes) == scenario.notes["argv"], status.argv_bytes


@then("the list of jobs can still be read")
def _list_readable(scenario: Scenario) -> None:
    assert scenario.program.list_ids() == [scenario.job]
