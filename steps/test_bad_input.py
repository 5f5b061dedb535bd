"""Steps for features/bad_input.feature."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st
from pytest_bdd import given, parsers, scenarios, then, when

from harness.figures import report
from harness.rpc import CallResult, call
from harness.server import ServerProgram
from jobmgr.api import job_pb2

from ._generated_requests import (
    PropertyRun,
    durations,
    garbage_text,
    int_values,
    obviously_invalid,
    run_property,
    safe_command,
    start_requests,
    uuid_text,
)
from ._phrases import MiB
from .fixtures_scenario import Scenario

scenarios("bad_input.feature")

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
# Codes that only a server fault (or a dead server) produces: never a fair answer to input.
FAULT_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# A message is "clear" when a person can read it in one go.
MAX_DETAILS = 1024
REQUESTS: dict[str, type[Message]] = {
    "Start": job_pb2.StartRequest,
    "Stop": job_pb2.StopRequest,
    "Status": job_pb2.StatusRequest,
    "Output": job_pb2.OutputRequest,
    "List": job_pb2.ListRequest,
}
# The string fields of each request, by field number: where bytes that are not UTF-8 go.
STRING_FIELDS = {
    name: [f.number for f in message.DESCRIPTOR.fields if f.type == f.TYPE_STRING]
    for name, message in REQUESTS.items()
}
KNOWN_STATES = set(job_pb2.JobState.values())


def _short(value: Any, width: int = 60) -> str:
    """A value for a failure message: long strings cut, a message field by field."""
    if isinstance(value, Message):
        fields = value.ListFields()
        return "{" + ", ".join(f"{f.name}: {_short(v, 40)}" for f, v in fields) + "}"
    if isinstance(value, bytes | str):
        text = repr(value)
    elif isinstance(value, list | tuple) or type(value).__name__.startswith("Repeated"):
        text = "[" + ", ".join(_short(v, 20) for v in list(value)[:5])
        text += f", ... {len(value)} items]" if len(value) > 5 else "]"
        return text
    else:
        text = str(value).replace("\n", " ")
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} chars)"


def _judge(
    run: PropertyRun | None, got: CallResult, allowed: set[grpc.StatusCode], what: str
) -> str:
    """The violation in one answer, or ""; counts its code in ``run``."""
    if run is not None:
        run.saw(got.code)
    if got.code not in allowed:
        return f"{got.code.name} for {what}: {got.details[:300]!r}"
    if got.code != OK and len(got.details) > MAX_DETAILS:
        return f"{len(got.details)}-char message for {what}: {got.details[:120]!r}..."
    if got.code != OK and not got.details.strip():
        return f"empty message with {got.code.name} for {what}"
    return ""


# ---- generated requests -----------------------------------------------------------------------


@when(parsers.parse("the admin sends {count:d} generated Start requests"))
def _gen_start(scenario: Scenario, count: int) -> None:
    stub = scenario.program.stub()
    started: list[str] = []
    strict: list[str] = []
    allowed = {OK, INVALID, grpc.StatusCode.FAILED_PRECONDITION}
    run = PropertyRun("Start")

    def check(request: job_pb2.StartRequest) -> str:
        got = call(stub.Start, request)
        if got.code == OK:
            started.append(got.value.uuid)
        why = obviously_invalid(request)
        if why and got.code != INVALID:
            strict.append(f"{got.code.name} for {why}: {_short(request)}")
        return _judge(run, got, allowed, _short(request))

    run = run_property(run, start_requests(), check, count)
    report(run.summary())
    scenario.notes.update(runs=[run], started=started, strict=strict)


@then("each got OK, INVALID_ARGUMENT or FAILED_PRECONDITION, with a message of at most 1 KiB")
@then("each got OK or INVALID_ARGUMENT, with a message of at most 1 KiB")
@then("every answer came with a message of at most 1 KiB")
def _no_violations(scenario: Scenario) -> None:
    runs: list[PropertyRun] = scenario.notes["runs"]
    assert all(not run.violations for run in runs), "\n".join(r.failures() for r in runs)


@then("each plainly invalid one got INVALID_ARGUMENT")
def _strict(scenario: Scenario) -> None:
    strict = scenario.notes["strict"]
    assert not strict, f"{len(strict)} plainly invalid requests got another code:\n" + "\n".join(
        strict[:10]
    )


@then("every job that was started ran to its end")
def _ran(scenario: Scenario) -> None:
    server = scenario.program
    for job in scenario.notes["started"]:
        status = server.wait_ended(job, timeout=30)
        assert status.state != job_pb2.JOB_STATE_RUNNING, status


@when(
    parsers.parse("the admin sends {count:d} generated job ids to each of Status, Stop and Output")
)
def _gen_ids(scenario: Scenario, count: int) -> None:
    stub = scenario.program.stub()
    wrong: list[str] = []
    run = PropertyRun("job ids x Status, Stop, Output")

    def check(text: str) -> str:
        canonical = _canonical(text)
        violations = []
        for name, method, request in (
            ("Status", stub.Status, job_pb2.StatusRequest(uuid=text)),
            ("Stop", stub.Stop, job_pb2.StopRequest(uuid=text)),
            ("Output", stub.Output, job_pb2.OutputRequest(uuid=text, no_follow=True)),
        ):
            got = call(method, request)
            violations.append(_judge(run, got, {NOT_FOUND, INVALID}, f"{name} {_short(text)}"))
            if canonical is True and got.code != NOT_FOUND:
                wrong.append(f"{name} of the well-formed {text!r} got {got.code.name}")
            if canonical is None and got.code != INVALID:
                wrong.append(f"{name} of {_short(text)}, no UUID, got {got.code.name}")
        return "; ".join(v for v in violations if v)

    run_property(run, uuid_text, check, count)
    run.tried *= 3
    report(run.summary())
    scenario.notes.update(runs=[run], wrong=wrong)


def _canonical(text: str) -> bool | None:
    """True for a canonical UUID, None for no UUID at all, False for one in another form."""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return None
    return str(parsed) == text


@then("a canonical id got NOT_FOUND and an id that is no UUID got INVALID_ARGUMENT")
def _ids_right(scenario: Scenario) -> None:
    wrong = scenario.notes["wrong"]
    assert not wrong, f"{len(wrong)} wrong codes:\n" + "\n".join(wrong[:10])


@given(parsers.parse('the admin has run "{command}" to its end'))
def _ran_to_end(scenario: Scenario, command: str) -> None:
    scenario.job = scenario.program.start_job(command.split())
    scenario.program.wait_ended(scenario.job)


@when(
    parsers.parse("the admin sends {count:d} generated Stop, Output and List requests for that job")
)
def _gen_misc(scenario: Scenario, count: int) -> None:
    stub = scenario.program.stub()
    unknown_states: list[str] = []
    job = scenario.job
    run = PropertyRun("Stop, Output, List")
    tails = st.one_of(st.none(), int_values)
    states = st.one_of(st.sampled_from(sorted(KNOWN_STATES)), st.integers(-(2**31), 2**31 - 1))

    def check(value: tuple[Duration | None, int | None, bool, int, str, int, str]) -> str:
        grace, tail, no_follow, state, owner, page_size, page_token = value
        stop = job_pb2.StopRequest(uuid=job, grace=grace)
        output = job_pb2.OutputRequest(uuid=job, no_follow=no_follow)
        if tail is not None:
            output.tail = tail
        listing = job_pb2.ListRequest(
            state=state,  # type: ignore[arg-type]
            owner=owner,
            page_size=page_size,
            page_token=page_token,
        )
        violations = []
        for name, method, request in (
            ("Stop", stub.Stop, stop),
            ("Output", stub.Output, output),
            ("List", stub.List, listing),
        ):
            got = call(method, request)
            violations.append(_judge(run, got, {OK, INVALID}, f"{name} {_short(request)}"))
            if name == "List" and state not in KNOWN_STATES and got.code != INVALID:
                unknown_states.append(f"List in state {state} got {got.code.name}")
            if name == "Output" and tail is not None and tail < 0 and got.code != INVALID:
                violations.append(f"{got.code.name} for a negative tail {tail}")
        return "; ".join(v for v in violations if v)

    strategy = st.tuples(
        st.one_of(st.none(), durations),
        tails,
        st.booleans(),
        states,
        garbage_text,
        st.integers(0, 2**32 - 1),
        garbage_text,
    )
    run_property(run, strategy, check, count)
    run.tried *= 3
    report(run.summary())
    scenario.notes.update(runs=[run], unknown_states=unknown_states)


@then("a List filter naming no known state got INVALID_ARGUMENT")
def _unknown_state(scenario: Scenario) -> None:
    wrong = scenario.notes["unknown_states"]
    assert not wrong, f"{len(wrong)} List calls with an unknown state were served:\n" + "\n".join(
        wrong[:5]
    )


@when(
    parsers.parse("the admin sends {count:d} generated byte strings as the request of each method")
)
def _gen_bytes(scenario: Scenario, count: int) -> None:
    server = scenario.program
    stubs = {name: server.raw_method(name) for name in REQUESTS}
    parsed_faults: list[str] = []
    run = PropertyRun("raw bytes")

    @st.composite
    def payloads(draw: Any) -> tuple[str, bytes]:
        method = draw(st.sampled_from(sorted(REQUESTS)))
        fields = STRING_FIELDS[method]
        bad_utf8 = st.builds(
            lambda number, junk: bytes([number << 3 | 2, len(junk) + 1]) + b"\xff" + junk,
            st.sampled_from(fields),
            st.binary(max_size=60),
        )
        return method, draw(st.one_of(st.binary(max_size=80), bad_utf8))

    def check(value: tuple[str, bytes]) -> str:
        method, data = value
        try:
            parsed = REQUESTS[method].FromString(data)
        except DecodeError:
            parsed = None
        if isinstance(parsed, job_pb2.StartRequest) and _would_run_something(parsed):
            return ""  # it parses as a Start of a real program: not ours to run
        got = call(stubs[method], data)
        what = f"{method} of bytes {_short(data)}"
        if parsed is None:
            return _judge(run, got, {INVALID}, what)
        run.saw(got.code)
        if got.code in FAULT_CODES:
            parsed_faults.append(f"{got.code.name} for {what}: {got.details[:200]!r}")
        return ""

    run_property(run, payloads(), check, count * len(REQUESTS))
    report(run.summary())
    scenario.notes.update(runs=[run], parsed_faults=parsed_faults)


def _would_run_something(request: job_pb2.StartRequest) -> bool:
    argv = [a.decode(errors="replace") for a in request.argv] or [request.cmd]
    return bool(argv[0]) and safe_command(argv[0]) != argv[0]


@then("each that is no valid request got INVALID_ARGUMENT, with a message of at most 1 KiB")
def _bytes_invalid(scenario: Scenario) -> None:
    _no_violations(scenario)


@then("each that happens to be a valid request got no UNKNOWN or INTERNAL")
def _parsed_fine(scenario: Scenario) -> None:
    faults = scenario.notes["parsed_faults"]
    assert not faults, "\n".join(faults[:10])


# ---- named garbage ----------------------------------------------------------------------------


_START = job_pb2.StartRequest
_LIMITS = job_pb2.Limits
_STATUS = job_pb2.StatusRequest
# Table row -> (method, or "raw " + method for bytes as they are; request from a finished job's id)
NAMED: dict[str, tuple[str, Callable[[str], Any]]] = {
    "Start with an empty command": ("Start", lambda _: _START(cmd="")),
    "Start with a NUL byte in an argument": ("Start", lambda _: _START(cmd="true", args=["a\0b"])),
    'Start of "no-such-program-h5"': ("Start", lambda _: _START(cmd="no-such-program-h5")),
    "Start with one argument of 1 MiB": ("Start", lambda _: _START(cmd="true", args=["y" * MiB])),
    'Start of a command named by 1 MiB of "x"': ("Start", lambda _: _START(cmd="x" * MiB)),
    "Start of true with 100000 arguments": (
        "Start", lambda _: _START(cmd="true", args=["z"] * 100_000)
    ),
    "Start with an argument of 5 MiB": (
        "Start", lambda _: _START(cmd="true", args=["w" * 5 * MiB])
    ),
    "Start with a cpu limit of NaN": (
        "Start", lambda _: _START(cmd="true", limits=_LIMITS(cpu=math.nan))
    ),
    "Start with a cpu limit of infinity": (
        "Start", lambda _: _START(cmd="true", limits=_LIMITS(cpu=math.inf))
    ),
    "Start with a cpu limit of 1e300": (
        "Start", lambda _: _START(cmd="true", limits=_LIMITS(cpu=1e300))
    ),
    "Start with a pids limit of 2^63-1": (
        "Start", lambda _: _START(cmd="true", limits=_LIMITS(pids=2**63 - 1))
    ),
    "Start with a memory limit of 1 byte": (
        "Start", lambda _: _START(cmd="true", limits=_LIMITS(memory_bytes=1))
    ),
    "Start with a memory limit of -1": (
        "Start", lambda _: _START(cmd="true", limits=_LIMITS(memory_bytes=-1))
    ),
    "Status of a job id of 1 MiB": ("Status", lambda _: _STATUS(uuid="v" * MiB)),
    'Status of "not-a-uuid"': ("Status", lambda _: _STATUS(uuid="not-a-uuid")),
    "Status of an unknown well-formed id": ("Status", lambda _: _STATUS(uuid=str(uuid.uuid4()))),
    "Stop of a finished job with a grace of -5 s": (
        "Stop", lambda done: job_pb2.StopRequest(uuid=done, grace=Duration(seconds=-5))
    ),
    "Stop of a finished job with a grace of 10^12 s": (
        "Stop", lambda done: job_pb2.StopRequest(uuid=done, grace=Duration(seconds=10**12))
    ),
    "Stop of a finished job with a grace of 2^63-1 s": (
        "Stop", lambda done: job_pb2.StopRequest(uuid=done, grace=Duration(seconds=2**63 - 1))
    ),
    "Start with a timeout of 10^15 seconds": (
        "Start", lambda _: _START(cmd="true", timeout=Duration(seconds=10**15))
    ),
    "Output of a finished job with a tail of -1": (
        "Output", lambda done: job_pb2.OutputRequest(uuid=done, tail=-1)
    ),
    "List of the jobs in state 99": ("List", lambda _: job_pb2.ListRequest(state=99)),  # type: ignore[arg-type]
    "Status with an id that is not UTF-8": ("raw Status", lambda _: b"\x0a\x02\xff\xfe"),
    "Start whose bytes are no StartRequest": ("raw Start", lambda _: b"\xff\xff\xff\xff"),
}  # fmt: skip


def _named(server: ServerProgram, phrase: str, done: str) -> tuple[Callable[..., Any], Any]:
    """The call and request a row of the table names; ``done`` is a finished job's id."""
    method, make = NAMED[phrase]
    if method.startswith("raw "):
        return server.raw_method(method.removeprefix("raw ")), make(done)
    return getattr(server.stub(), method), make(done)


@when("the admin sends each request below")
def _send_named(scenario: Scenario, datatable: list[list[str]]) -> None:
    server = scenario.program
    done = server.start_job(["true"])
    server.wait_ended(done)
    answers = []
    for phrase, answer, mentions in datatable[1:]:
        method, request = _named(server, phrase, done)
        got = call(method, request)
        if got.code == OK and isinstance(got.value, job_pb2.StartResponse):
            server.wait_ended(got.value.uuid, timeout=30)
        answers.append((phrase, answer, mentions, got))
    scenario.notes["answers"] = answers


@then("each got its answer, with a message of at most 1 KiB mentioning what it names")
def _named_answers(scenario: Scenario) -> None:
    wrong = []
    for phrase, answer, mentions, got in scenario.notes["answers"]:
        allowed = {grpc.StatusCode[code] for code in re.split(r"\s+or\s+", answer)}
        problem = _judge(None, got, allowed, phrase)
        if not problem and got.code != OK and mentions.lower() not in got.details.lower():
            problem = f"{phrase}: the message does not mention {mentions!r}: {got.details[:200]!r}"
        if problem:
            wrong.append(problem)
    report(f"named garbage: {len(scenario.notes['answers'])} requests, {len(wrong)} answered wrong")
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong)


# ---- the largest argv -------------------------------------------------------------------------


@when(parsers.parse("the admin starts {jobs:d} jobs with {count:d} arguments of {kib:d} KiB each"))
def _big_argv(scenario: Scenario, jobs: int, count: int, kib: int) -> None:
    server = scenario.program
    args = [chr(ord("a") + i) * kib * 1024 for i in range(count)]
    ids = [server.start_job(["true", *args]) for _ in range(jobs)]
    for job in ids:
        server.wait_ended(job)
    scenario.notes["big"] = ids


@then("each of them can be read with Status")
def _big_status(scenario: Scenario) -> None:
    for job in scenario.notes["big"]:
        assert scenario.program.status(job).state != job_pb2.JOB_STATE_RUNNING


@then("List still answers, for the admin and for the user")
def _big_list(scenario: Scenario) -> None:
    for kind in ("admin", "user"):
        got = call(scenario.program.stub(kind).List, job_pb2.ListRequest())
        assert got.code == OK, f"List for the {kind}: {got.code.name} {got.details[:300]}"
        assert {j.uuid for j in got.value.jobs} >= set(scenario.notes["big"])
