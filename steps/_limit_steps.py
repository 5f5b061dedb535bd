"""Steps of features/hardening.feature that try each connection, stream and call limit past
its value against the real jobmgr-server program, and serve the admin meanwhile; the floods
they open are in _floods, the bare connections in _bare_connections."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from pytest_bdd import given, parsers, then, when

from harness.figures import report
from harness.server import ServerProgram
from jobmgr.api import job_pb2

from ._bare_connections import HALF_CLIENT_HELLO, closed_at, connect, is_closed
from ._floods import Flood, FloodPlan
from ._h2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    ClientTLS,
    RawCall,
    frame,
    grpc_message,
    hpack_literal,
)
from ._server_steps import new_log
from .fixtures_scenario import Scenario

ENHANCE_YOUR_CALM = 0xB
TICKING = "while :; do echo tick; sleep 0.1; done"


@pytest.fixture
def held_sockets() -> Iterator[list[socket.socket]]:
    """Bare connections a scenario opens, closed after it."""
    socks: list[socket.socket] = []
    yield socks
    for sock in socks:
        sock.close()


@pytest.fixture
def floods() -> Iterator[list[Flood]]:
    """Floods a scenario starts, stopped after it (before its server is)."""
    started: list[Flood] = []
    yield started
    for flood in started:
        flood.stop()


def start_flood(scenario: Scenario, floods: list[Flood], kind: str, **plan: Any) -> Flood:
    server = scenario.program
    pair = server.pki.client(kind)
    flood = Flood(
        FloodPlan(
            plan.pop("target", server.target), server.port, server.pki.ca_pem,
            pair.cert_pem, pair.key_pem, **plan,
        )
    )  # fmt: skip
    floods.append(flood)
    flood.start()
    return flood


def admin_tls(server: ServerProgram) -> ClientTLS:
    pair = server.pki.client("admin")
    return ClientTLS(server.pki.ca_path, pair.cert_path, pair.key_path)


def log_lines(scenario: Scenario, *words: str) -> list[str]:
    return [line for line in new_log(scenario).splitlines() if all(w in line for w in words)]


def logged(scenario: Scenario, *words: str, within: float = 3.0) -> list[str]:
    """The log lines holding every one of ``words``, waiting ``within`` s for the first."""
    deadline = time.monotonic() + within
    while not (lines := log_lines(scenario, *words)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


# ---- given ------------------------------------------------------------------------------------


@given("the admin has started a job that prints a line every 0.1 seconds")
def _ticking_job(scenario: Scenario) -> None:
    scenario.job = scenario.program.start_job(scenario.program.marked(TICKING))


# ---- bare connections -------------------------------------------------------------------------


@when(parsers.parse("{count:d} TCP connections from 127.0.0.2 are opened and send nothing"))
def _open_bare(scenario: Scenario, held_sockets: list[socket.socket], count: int) -> None:
    for _ in range(count):
        held_sockets.append(connect(scenario.program.port))
    scenario.notes["bare"] = list(held_sockets)


@then(
    parsers.parse(
        "{kept:d} of them stay open and the server closes the other {closed:d} within 1 second"
    )
)
def _some_closed(scenario: Scenario, kept: int, closed: int) -> None:
    socks = scenario.notes["bare"]
    shut = closed_at(socks, 1.0)
    time.sleep(0.3)  # and the survivors are not closed a moment later
    still_open = [s for s in socks if not is_closed(s)]
    assert len(shut) == closed and len(still_open) == kept, (
        f"{len(shut)} closed within 1 s and {len(still_open)} open, of {len(socks)}"
    )


@then("the admin, connecting from another address, can start a job and read its status")
def _admin_served(scenario: Scenario) -> None:
    server = scenario.program
    job = server.start_job(["echo", "admin served"])
    status = server.wait_ended(job)
    assert status.exit_code == 0, status


@then(parsers.parse('the server logged "{message}" naming {limit} and {who}'))
def _logged_naming_who(scenario: Scenario, message: str, limit: str, who: str) -> None:
    # ``who`` is a peer address or a caller's name.
    lines = logged(scenario, f" {message} ", f"limit={limit}", f"={who}")
    assert lines, f"no {message!r} line naming {limit} and {who} in:\n{new_log(scenario)}"


@then(parsers.re(r'the server logged "(?P<message>[^"]+)" naming (?P<limit>\w+)'))
def _logged_naming(scenario: Scenario, message: str, limit: str) -> None:
    lines = logged(scenario, message, f"limit={limit}")
    assert lines, f"no {message!r} line naming {limit} in:\n{new_log(scenario)}"


@then("a 6th connection is closed by the server within 1 second")
def _sixth_closed(scenario: Scenario, held_sockets: list[socket.socket]) -> None:
    sixth = connect(scenario.program.port)
    held_sockets.append(sixth)
    assert closed_at([sixth], 1.0), "the 6th connection is still open after 1 s"
    assert not any(is_closed(s) for s in scenario.notes["bare"]), "one of the 5 was closed"


@then("once those 5 are closed, the admin gets its Status answered")
def _admin_after_close(scenario: Scenario, held_sockets: list[socket.socket]) -> None:
    for sock in held_sockets:
        sock.close()
    held_sockets.clear()
    time.sleep(0.2)  # gRPC reads their end and lets their places go
    _admin_served(scenario)


@when("one TCP connection sends nothing and another sends half a TLS ClientHello")
def _slow_handshakes(scenario: Scenario, held_sockets: list[socket.socket]) -> None:
    silent, half = connect(scenario.program.port), connect(scenario.program.port)
    half.sendall(HALF_CLIENT_HELLO)
    held_sockets += [silent, half]
    scenario.notes["bare"] = [silent, half]


@then("the server closes both between 0.5 and 3 seconds after they were opened")
def _closed_in_time(scenario: Scenario) -> None:
    socks = scenario.notes["bare"]
    shut = closed_at(socks, 4.0)
    assert len(shut) == 2, f"only {len(shut)} of 2 closed within 4 s"
    assert all(0.5 <= seconds <= 3.0 for seconds in shut.values()), sorted(shut.values())


# ---- idle connections and pings ---------------------------------------------------------------


@when("one connection follows that job's output and another makes one call and then waits")
def _follow_and_wait(scenario: Scenario) -> None:
    server = scenario.program
    stamps: list[float] = []
    began = time.monotonic()
    call = server.stub().Output(job_pb2.OutputRequest(uuid=scenario.job), timeout=30)

    def follow() -> None:
        try:
            for _ in call:
                stamps.append(time.monotonic() - began)
        except grpc.RpcError:
            pass

    threading.Thread(target=follow, daemon=True).start()
    waiting = RawCall(server.port, admin_tls(server))
    waiting.send_call("/job.JobManager/List", b"")
    scenario.notes.update(stamps=stamps, follow=call, waiting=waiting, began=began)


@then(parsers.parse('within 4 seconds the waiting connection is sent GOAWAY "idle" and closed'))
def _idle_goaway(scenario: Scenario) -> None:
    waiting: RawCall = scenario.notes["waiting"]
    waiting.sock.settimeout(5)
    goaway = None
    while (got := waiting.read_frame()) is not None:
        if got[0] == GOAWAY:
            goaway = got[3]
    waited = time.monotonic() - scenario.notes["began"]
    waiting.close()
    assert goaway is not None, "the connection ended without GOAWAY"
    assert b"idle" in goaway[8:], goaway
    assert waited < 4.5, f"closed after {waited:.1f} s"


@then("the following connection still receives output after 4 seconds")
def _still_following(scenario: Scenario) -> None:
    stamps: list[float] = scenario.notes["stamps"]
    deadline = time.monotonic() + 5
    while not (stamps and stamps[-1] > 4.0) and time.monotonic() < deadline:
        time.sleep(0.1)
    scenario.notes["follow"].cancel()
    assert stamps and stamps[-1] > 4.0, f"the last output came at {stamps[-1:]} s"


@when("the user client follows that job's output by hand and then stops reading or answering")
def _silent_follower(scenario: Scenario) -> None:
    server = scenario.program
    pair = server.pki.client("user")
    client = RawCall(server.port, ClientTLS(server.pki.ca_path, pair.cert_path, pair.key_path))
    client.send_call(
        "/job.JobManager/Output", job_pb2.OutputRequest(uuid=scenario.job).SerializeToString()
    )
    assert client.read_until_data(), "the hand-made follower got no output"
    scenario.notes["silent"] = client  # from now on: not a byte read, no PING answered


@then("another Output stream of the user client is refused with RESOURCE_EXHAUSTED")
def _second_refused(scenario: Scenario) -> None:
    request = job_pb2.OutputRequest(uuid=scenario.job)
    try:
        next(iter(scenario.program.stub("user").Output(request, timeout=10)))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
    else:
        raise AssertionError("a second stream got output past streams_per_caller = 1")


@then("within 90 seconds the server has closed the silent connection")
def _silent_closed(scenario: Scenario) -> None:
    client: RawCall = scenario.notes["silent"]
    began = time.monotonic()
    client.sock.settimeout(1)
    while time.monotonic() - began < 90:
        try:
            if not client.sock.recv(65536):  # what it sent is dropped unread: no answer
                break
        except TimeoutError:
            continue
        except OSError:
            break
    else:
        raise AssertionError("the silent connection is still open after 90 s")
    report(f"a client answering no PING was dropped after {time.monotonic() - began:.0f} s")
    client.close()


@then("the user client can follow the job's output again")
def _follow_again(scenario: Scenario) -> None:
    call = scenario.program.stub("user").Output(
        job_pb2.OutputRequest(uuid=scenario.job), timeout=10
    )
    assert next(iter(call)).output
    call.cancel()


# ---- streams ----------------------------------------------------------------------------------


@when(parsers.re(r"the user client opens (?P<count>\d+) Output streams on that job, on "
                 r"(?P<connections>\d+) connections"))  # fmt: skip
def _user_streams(scenario: Scenario, floods: list[Flood], count: str, connections: str) -> None:
    scenario.notes["flood"] = start_flood(
        scenario, floods, "user", job=scenario.job, streams=int(count),
        connections=int(connections),
    )  # fmt: skip


@then(
    parsers.parse(
        '{ok:d} of them stream and {refused:d} fails with RESOURCE_EXHAUSTED saying "{says}"'
    )
)
def _some_refused(scenario: Scenario, ok: int, refused: int, says: str) -> None:
    counts = scenario.notes["flood"].counts
    assert counts.streaming == ok, counts.as_dict()
    assert counts.refused == {"RESOURCE_EXHAUSTED": refused}, counts.as_dict()
    assert says in counts.details["RESOURCE_EXHAUSTED"], counts.details


@then("the admin can still start a job, read its status and follow its output")
def _admin_still(scenario: Scenario) -> None:
    server = scenario.program
    job = server.start_job(["echo", "admin served"])
    assert server.output(job, timeout=30) == b"admin served\n"
    assert server.status(job).exit_code == 0


@when("a client opens 3 Output streams on one connection at once, by hand")
def _raw_streams(scenario: Scenario) -> None:
    server = scenario.program
    client = RawCall(server.port, admin_tls(server))
    request = grpc_message(job_pb2.OutputRequest(uuid=scenario.job).SerializeToString())
    headers = hpack_literal(
        [
            (":method", "POST"), (":scheme", "https"), (":path", "/job.JobManager/Output"),
            (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
        ]
    )  # fmt: skip
    out = PREFACE + frame(SETTINGS, 0, 0)
    for stream in (1, 3, 5):
        out += frame(HEADERS, END_HEADERS, stream, headers)
        out += frame(DATA, END_STREAM, stream, request)
    client.sock.sendall(out)
    client.sock.settimeout(3)
    data: dict[int, int] = {}
    resets: dict[int, int] = {}
    ends = time.monotonic() + 3
    while time.monotonic() < ends and (got := client.read_frame()) is not None:
        kind, _, stream, payload = got
        if kind == DATA:
            data[stream] = data.get(stream, 0) + len(payload)
        elif kind == RST_STREAM:
            resets[stream] = struct.unpack("!I", payload)[0]
        if len(data) >= 2 and resets:
            break
    client.close()
    scenario.notes.update(data=data, resets=resets)


@then("the first 2 streams receive output and the 3rd is reset with ENHANCE_YOUR_CALM")
def _third_reset(scenario: Scenario) -> None:
    data, resets = scenario.notes["data"], scenario.notes["resets"]
    assert set(data) == {1, 3}, f"DATA on streams {sorted(data)}, resets {resets}"
    assert resets == {5: ENHANCE_YOUR_CALM}, resets


@when("the admin and the user client each hold 2 Output streams on that job")
def _four_streams(scenario: Scenario, floods: list[Flood]) -> None:
    scenario.notes["floods"] = [
        start_flood(scenario, floods, kind, job=scenario.job, streams=2)
        for kind in ("admin", "user")
    ]


@then(parsers.parse('a Status call fails with RESOURCE_EXHAUSTED saying "{says}"'))
def _status_refused(scenario: Scenario, says: str) -> None:
    try:
        scenario.program.status(scenario.job)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        assert says in (exc.details() or ""), exc.details()
    else:
        raise AssertionError("Status was answered past rpcs_in_flight")


@then("once one stream is cancelled, a Status call answers")
def _status_after(scenario: Scenario) -> None:
    scenario.notes["floods"][0].stop()
    time.sleep(0.2)
    assert scenario.program.status(scenario.job).status == "RUNNING"


@when("the user client holds 1 Output stream on that job and tries 200 more")
def _refusal_flood(scenario: Scenario, floods: list[Flood]) -> None:
    start_flood(scenario, floods, "user", job=scenario.job, streams=1)
    scenario.notes["flood"] = start_flood(
        scenario, floods, "user", job=scenario.job, streams=200, connections=2
    )


@then("all 200 fail with RESOURCE_EXHAUSTED")
def _all_refused(scenario: Scenario) -> None:
    counts = scenario.notes["flood"].counts
    assert counts.refused == {"RESOURCE_EXHAUSTED": 200}, counts.as_dict()


@then(parsers.parse('the server logged at most 5 "refused" lines for them, one saying how many '
                    "it left out"))  # fmt: skip
def _few_lines(scenario: Scenario) -> None:
    def lines() -> list[str]:
        return log_lines(scenario, " refused ", "limit=streams_per_caller")

    deadline = time.monotonic() + 15  # the count comes once the 10 s window has passed
    while not any("not_logged=" in line for line in lines()) and time.monotonic() < deadline:
        time.sleep(0.2)
    found = lines()
    assert 1 <= len(found) <= 6, "\n".join(found)
    # A line logged for a refusal names its method; any may add how many were left out.
    logged = sum(1 for line in found if "method=" in line)
    left_out = sum(int(m[1]) for line in found if (m := re.search(r"not_logged=(\d+)", line)))
    assert logged <= 5 and logged + left_out == 200, "\n".join(found)
