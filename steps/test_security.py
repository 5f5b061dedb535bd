"""Steps for features/security.feature."""

from __future__ import annotations

import re
import subprocess
import uuid
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import strategies as st
from pytest_bdd import given, parsers, scenarios, then, when

from jobmgr.api import job_pb2, job_pb2_grpc

from ._grpc_steps import eventually
from ._hostile_certfile_steps import *  # noqa: F403  # the certificate-file steps
from ._hostile_props import PropertyRun, durations, run_property, start_requests, uuid_text
from ._hostile_steps import *  # noqa: F403  # the shared steps
from ._hostile_steps import Hostile, mark_log, new_log, outcome, report
from ._hostile_tls_steps import *  # noqa: F403  # the handshake steps
from .fixtures_pki import CLIENT_KINDS
from .fixtures_server import program, program_env

scenarios("security.feature")

KIND = "(?P<kind>" + "|".join(re.escape(kind) for kind in CLIENT_KINDS) + ")"
# A job that writes each of its arguments as bytes, NUL-terminated: what it was really given.
PRINT_ARGS = (
    "import os, sys; "
    "sys.stdout.buffer.write(b''.join(os.fsencode(a) + b'\\0' for a in sys.argv[1:]))"
)
METHODS = ("Start", "Stop", "Status", "Output", "List", "Health", "Reflection")


# ---- roles ------------------------------------------------------------------------------------


@then(parsers.parse('the server logged the refused Start of "{caller}" as PERMISSION_DENIED'))
def _logged_refusal(hostile: Hostile, caller: str) -> None:
    def logged() -> bool:
        return any(
            "Start" in line and "PERMISSION_DENIED" in line and caller in line
            for line in new_log(hostile).splitlines()
        )

    try:
        eventually(logged, 5.0, "the log line")
    except AssertionError:
        raise AssertionError(
            f"the server's log has no line naming the Start call, {caller!r} and "
            f"PERMISSION_DENIED; it says:\n{new_log(hostile)[-2000:] or '(nothing)'}"
        ) from None


@when(parsers.re(f"the {KIND} client tries to start a job"))
def _try_start(hostile: Hostile, kind: str) -> None:
    server = hostile.srv
    mark_log(hostile)
    argv = server.marked("sleep 30")
    hostile.notes["result"] = outcome(
        server.stub(kind).Start, job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
    )


@then(parsers.parse('the call fails with PERMISSION_DENIED saying "{says}"'))
def _denied_saying(hostile: Hostile, says: str) -> None:
    got = hostile.notes["result"]
    assert got.code == grpc.StatusCode.PERMISSION_DENIED and says in got.details, got


@given("the admin has started a job that prints a line every 0.1 seconds")
def _ticking(hostile: Hostile) -> None:
    hostile.job = hostile.srv.start_job(
        hostile.srv.marked("while :; do echo tick; sleep 0.1; done")
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
        got = outcome(health.Check, health_pb2.HealthCheckRequest(service="job.JobManager"))
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
        "Stop": job_pb2.StopRequest(uuid=job, grace=_seconds(1)),
        "Status": job_pb2.StatusRequest(uuid=job),
        "List": job_pb2.ListRequest(),
    }[method]
    got = outcome(getattr(stub, method), request)
    started = got.value.uuid if method == "Start" and got.code == grpc.StatusCode.OK else ""
    return got.code, 0, started


@when("each client below makes each call on that running job, the admin last")
def _matrix_calls(hostile: Hostile) -> None:
    pass  # the Then step has the table of clients, and makes the calls


@then("the answers are")
def _answers(hostile: Hostile, datatable: list[list[str]]) -> None:
    server = hostile.srv
    header, *rows = datatable
    assert tuple(header[1:]) == METHODS, header
    assert rows[-1][0] == "admin", "the admin's row must come last: its Stop ends the job"
    mismatches, leaks, admin_jobs, states = [], [], [], []
    order = ("Start", "Status", "Output", "List", "Health", "Reflection", "Stop")  # Stop ends it
    for kind, *expected in rows:
        want = dict(zip(METHODS, expected, strict=True))
        channel = server.channel(kind)
        for method in order:
            code, received, started = _make_call(channel, method, hostile.job, server.marker)
            if started:
                admin_jobs.append((kind, started))
            if code != grpc.StatusCode[want[method]]:
                mismatches.append(f"{kind} {method}: want {want[method]}, got {code.name}")
            if code != grpc.StatusCode.OK and received:
                leaks.append(f"{kind} got {received} bytes of {method} before being refused")
        if kind != "admin":
            states.append((kind, server.status(hostile.job).state))
    assert not mismatches, "\n".join(mismatches)
    hostile.notes.update(leaks=leaks, started=admin_jobs, states=states)


def _seconds(value: float) -> Any:
    from google.protobuf.duration_pb2 import Duration

    duration = Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


@then("no refused Output stream carried a byte of output")
def _no_leak(hostile: Hostile) -> None:
    assert hostile.notes["leaks"] == [], hostile.notes["leaks"]


@then("the job kept running until the admin stopped it, and only the admin started a job")
def _admin_only(hostile: Hostile) -> None:
    server = hostile.srv
    states = hostile.notes["states"]
    assert all(state == job_pb2.JOB_STATE_RUNNING for _, state in states), states
    assert server.status(hostile.job).state == job_pb2.JOB_STATE_STOPPED
    started = hostile.notes["started"]
    assert [kind for kind, _ in started] == ["admin"], started
    assert sorted(server.list_ids()) == sorted([hostile.job, started[0][1]])


@when(
    parsers.parse(
        "the user client sends {starts:d} generated Start requests and {stops:d} generated "
        "Stop requests"
    )
)
def _user_property(hostile: Hostile, starts: int, stops: int) -> None:
    server = hostile.srv
    stub = server.stub("user")

    runs = [PropertyRun("user Start"), PropertyRun("user Stop")]

    def start_check(request: job_pb2.StartRequest) -> str:
        got = outcome(stub.Start, request)
        runs[0].saw(got.code)
        return "" if got.code == grpc.StatusCode.PERMISSION_DENIED else f"Start: {got.code}"

    stop_requests = st.builds(
        job_pb2.StopRequest,
        uuid=st.one_of(st.just(hostile.job), uuid_text),
        grace=st.one_of(st.none(), durations),
    )

    def stop_check(request: job_pb2.StopRequest) -> str:
        got = outcome(stub.Stop, request)
        runs[1].saw(got.code)
        return "" if got.code == grpc.StatusCode.PERMISSION_DENIED else f"Stop: {got.code}"

    run_property(runs[0], start_requests(), start_check, starts)
    run_property(runs[1], stop_requests, stop_check, stops)
    for run in runs:
        report(run.summary())
    hostile.notes["runs"] = runs


@then("every one of them fails with PERMISSION_DENIED")
def _all_denied(hostile: Hostile) -> None:
    for run in hostile.notes["runs"]:
        assert not run.violations, run.failures()


@then("the admin's job is still running and it is the only job")
def _still_alone(hostile: Hostile) -> None:
    server = hostile.srv
    assert server.status(hostile.job).state == job_pb2.JOB_STATE_RUNNING
    assert server.list_ids() == [hostile.job]


@when("the user asks for that job's status and output, and for the list of jobs")
def _user_looks(hostile: Hostile) -> None:
    server = hostile.srv
    stub = server.stub("user")
    nobody = str(uuid.uuid4())
    hostile.notes.update(
        status=outcome(stub.Status, job_pb2.StatusRequest(uuid=hostile.job)),
        unknown=outcome(stub.Status, job_pb2.StatusRequest(uuid=nobody)),
        nobody=nobody,
        output=_first_output(stub, hostile.job),
        lists=[
            outcome(stub.List, job_pb2.ListRequest()),
            outcome(stub.List, job_pb2.ListRequest(owner="client_admin")),
        ],
    )


@then("the status and the output are NOT_FOUND, word for word as for an id no job has")
def _not_found_alike(hostile: Hostile) -> None:
    notes = hostile.notes
    status, unknown = notes["status"], notes["unknown"]
    assert status.code == unknown.code == grpc.StatusCode.NOT_FOUND, (status, unknown)
    assert status.details.replace(hostile.job, "ID") == unknown.details.replace(
        notes["nobody"], "ID"
    ), (status.details, unknown.details)
    assert notes["output"][0] == grpc.StatusCode.NOT_FOUND, notes["output"]


@then("no byte of the job's output reached the user")
def _no_output_bytes(hostile: Hostile) -> None:
    assert hostile.notes["output"][1] == 0


@then("the user's list is empty, even when it asks for the admin's jobs by owner")
def _empty_lists(hostile: Hostile) -> None:
    for got in hostile.notes["lists"]:
        assert got.code == grpc.StatusCode.OK and list(got.value.jobs) == [], got


# ---- argv -------------------------------------------------------------------------------------


def _unescape(text: str) -> str:
    return re.sub(r"\\(n|\\)", lambda m: "\n" if m.group(1) == "n" else "\\", text)


@when("the admin starts python3 printing its arguments, with the arguments")
def _start_args(hostile: Hostile, datatable: list[list[str]]) -> None:
    args = [_unescape(row[0]) for row in datatable[1:]]
    hostile.job = hostile.srv.start_job(["python3", "-c", PRINT_ARGS, *args])
    hostile.notes["expected"] = b"".join(arg.encode() + b"\0" for arg in args)


@when("the admin starts python3 printing its arguments through the raw argv field, with the bytes")
def _start_raw_argv(hostile: Hostile, datatable: list[list[str]]) -> None:
    args = [bytes.fromhex(row[0]) for row in datatable[1:]]
    argv = [b"python3", b"-c", PRINT_ARGS.encode(), *args]
    assert "argv" in job_pb2.StartRequest.DESCRIPTOR.fields_by_name, (
        "StartRequest has no raw `repeated bytes argv` field (issue 4)"
    )
    request = job_pb2.StartRequest(argv=argv)
    hostile.job = hostile.srv.stub().Start(request, timeout=30).uuid
    hostile.notes.update(expected=b"".join(arg + b"\0" for arg in args), argv=argv)


@when(
    parsers.parse(
        'jobmgr-client starts python3 printing its arguments, with an argument of bytes "{hex}"'
    )
)
def _cli_start(hostile: Hostile, hex: str) -> None:
    server = hostile.srv
    arg = bytes.fromhex(hex)
    pair = server.pki.client("admin")
    argv: list[str | bytes] = [
        *program("jobmgr-client"), "--host", "localhost", "--port", str(server.port),
        "--ca", str(server.pki.ca_path), "--cert", str(pair.cert_path),
        "--key", str(pair.key_path), "start", "--", "python3", "-c", PRINT_ARGS, arg,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, env=program_env(), timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    hostile.job = done.stdout.decode().strip()
    hostile.notes["expected"] = arg + b"\0"


@then(parsers.re("the job received exactly (those arguments|those bytes|that argument)"))
def _received(hostile: Hostile) -> None:
    server = hostile.srv
    status = server.wait_ended(hostile.job)
    assert (status.state, status.exit_code) == (job_pb2.JOB_STATE_EXITED, 0), status
    assert server.output(hostile.job) == hostile.notes["expected"]


@then("the job's status gives its argv back exactly in argv_bytes")
def _argv_bytes(hostile: Hostile) -> None:
    status = hostile.srv.status(hostile.job)
    assert list(status.argv_bytes) == hostile.notes["argv"], status.argv_bytes


@then("the list of jobs can still be read")
def _list_readable(hostile: Hostile) -> None:
    assert hostile.srv.list_ids() == [hostile.job]
