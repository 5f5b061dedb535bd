"""Steps of features/hardening.feature about connections, streams and calls: each limit tried
past its value against the real program, and the admin served meanwhile. Pulled into
test_hardening.py with ``from ._hardening_limit_steps import *``."""

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

from jobmgr.api import job_pb2

from ._hardening_flood import Flood, FloodPlan
from ._hardening_net import HALF_CLIENT_HELLO, closed_at, connect, is_closed
from ._hardening_server import LaunchExposed
from ._hostile_h2 import (
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
from ._hostile_server import HostileServer, usage
from ._hostile_steps import Hostile, new_log, report

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


def start_flood(hostile: Hostile, floods: list[Flood], kind: str, **plan: Any) -> Flood:
    server = hostile.srv
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


def admin_tls(server: HostileServer) -> ClientTLS:
    pair = server.pki.client("admin")
    return ClientTLS(server.pki.ca_path, pair.cert_path, pair.key_path)


def log_lines(hostile: Hostile, *words: str) -> list[str]:
    return [line for line in new_log(hostile).splitlines() if all(w in line for w in words)]


def logged(hostile: Hostile, *words: str, within: float = 3.0) -> list[str]:
    """The log lines holding every one of ``words``, waiting ``within`` s for the first."""
    deadline = time.monotonic() + within
    while not (lines := log_lines(hostile, *words)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


# ---- given ------------------------------------------------------------------------------------


@given("jobmgr-server is running with a file descriptor limit of 1024, soft and hard")
def _low_fd_server(launch_exposed: LaunchExposed, hostile: Hostile) -> None:
    hostile.server = launch_exposed(nofile=(1024, 1024))


@given("the admin has started a job that prints a line every 0.1 seconds")
def _ticking_job(hostile: Hostile) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked(TICKING))


# ---- bare connections -------------------------------------------------------------------------


@when(parsers.parse("{count:d} TCP connections from 127.0.0.2 are opened and send nothing"))
def _open_bare(hostile: Hostile, held_sockets: list[socket.socket], count: int) -> None:
    for _ in range(count):
        held_sockets.append(connect(hostile.srv.port))
    hostile.notes["bare"] = list(held_sockets)


@then(
    parsers.parse(
        "{kept:d} of them stay open and the server closes the other {closed:d} within 1 second"
    )
)
def _some_closed(hostile: Hostile, kept: int, closed: int) -> None:
    socks = hostile.notes["bare"]
    shut = closed_at(socks, 1.0)
    time.sleep(0.3)  # and the survivors are not closed a moment later
    still_open = [s for s in socks if not is_closed(s)]
    assert len(shut) == closed and len(still_open) == kept, (
        f"{len(shut)} closed within 1 s and {len(still_open)} open, of {len(socks)}"
    )


@then("the admin, connecting from another address, can start a job and read its status")
def _admin_served(hostile: Hostile) -> None:
    server = hostile.srv
    job = server.start_job(["echo", "admin served"])
    status = server.wait_ended(job)
    assert status.exit_code == 0, status


@then(parsers.parse('the server logged "{message}" naming {limit} and {who}'))
def _logged_naming_who(hostile: Hostile, message: str, limit: str, who: str) -> None:
    # ``who`` is a peer address or a caller's name.
    lines = logged(hostile, f" {message} ", f"limit={limit}", f"={who}")
    assert lines, f"no {message!r} line naming {limit} and {who} in:\n{new_log(hostile)}"


@then(parsers.parse('the server logged "{message}" naming {limit}'))
def _logged_naming(hostile: Hostile, message: str, limit: str) -> None:
    lines = logged(hostile, message, f"limit={limit}")
    assert lines, f"no {message!r} line naming {limit} in:\n{new_log(hostile)}"


@then("a 6th connection is closed by the server within 1 second")
def _sixth_closed(hostile: Hostile, held_sockets: list[socket.socket]) -> None:
    sixth = connect(hostile.srv.port)
    held_sockets.append(sixth)
    assert closed_at([sixth], 1.0), "the 6th connection is still open after 1 s"
    assert not any(is_closed(s) for s in hostile.notes["bare"]), "one of the 5 was closed"


@then("once those 5 are closed, the admin gets its Status answered")
def _admin_after_close(hostile: Hostile, held_sockets: list[socket.socket]) -> None:
    for sock in held_sockets:
        sock.close()
    held_sockets.clear()
    time.sleep(0.2)  # gRPC reads their end and lets their places go
    _admin_served(hostile)


@when("one TCP connection sends nothing and another sends half a TLS ClientHello")
def _slow_handshakes(hostile: Hostile, held_sockets: list[socket.socket]) -> None:
    silent, half = connect(hostile.srv.port), connect(hostile.srv.port)
    half.sendall(HALF_CLIENT_HELLO)
    held_sockets += [silent, half]
    hostile.notes["bare"] = [silent, half]


@then("the server closes both between 0.5 and 3 seconds after they were opened")
def _closed_in_time(hostile: Hostile) -> None:
    socks = hostile.notes["bare"]
    shut = closed_at(socks, 4.0)
    assert len(shut) == 2, f"only {len(shut)} of 2 closed within 4 s"
    assert all(0.5 <= seconds <= 3.0 for seconds in shut.values()), sorted(shut.values())


# ---- idle connections and pings ---------------------------------------------------------------


@when("one connection follows that job's output and another makes one call and then waits")
def _follow_and_wait(hostile: Hostile) -> None:
    server = hostile.srv
    stamps: list[float] = []
    began = time.monotonic()
    call = server.stub().Output(job_pb2.OutputRequest(uuid=hostile.job), timeout=30)

    def follow() -> None:
        try:
            for _ in call:
                stamps.append(time.monotonic() - began)
        except grpc.RpcError:
            pass

    threading.Thread(target=follow, daemon=True).start()
    waiting = RawCall(server.port, admin_tls(server))
    waiting.send_call("/job.JobManager/List", b"")
    hostile.notes.update(stamps=stamps, follow=call, waiting=waiting, began=began)


@then(parsers.parse('within 4 seconds the waiting connection is sent GOAWAY "idle" and closed'))
def _idle_goaway(hostile: Hostile) -> None:
    waiting: RawCall = hostile.notes["waiting"]
    waiting.sock.settimeout(5)
    goaway = None
    while (got := waiting.read_frame()) is not None:
        if got[0] == GOAWAY:
            goaway = got[3]
    waited = time.monotonic() - hostile.notes["began"]
    waiting.close()
    assert goaway is not None, "the connection ended without GOAWAY"
    assert b"idle" in goaway[8:], goaway
    assert waited < 4.5, f"closed after {waited:.1f} s"


@then("the following connection still receives output after 4 seconds")
def _still_following(hostile: Hostile) -> None:
    stamps: list[float] = hostile.notes["stamps"]
    deadline = time.monotonic() + 5
    while not (stamps and stamps[-1] > 4.0) and time.monotonic() < deadline:
        time.sleep(0.1)
    hostile.notes["follow"].cancel()
    assert stamps and stamps[-1] > 4.0, f"the last output came at {stamps[-1:]} s"


@when("the user client follows that job's output by hand and then stops reading or answering")
def _silent_follower(hostile: Hostile) -> None:
    server = hostile.srv
    pair = server.pki.client("user")
    client = RawCall(server.port, ClientTLS(server.pki.ca_path, pair.cert_path, pair.key_path))
    client.send_call(
        "/job.JobManager/Output", job_pb2.OutputRequest(uuid=hostile.job).SerializeToString()
    )
    assert client.read_until_data(), "the hand-made follower got no output"
    hostile.notes["silent"] = client  # from now on: not a byte read, no PING answered


@then("another Output stream of the user client is refused with RESOURCE_EXHAUSTED")
def _second_refused(hostile: Hostile) -> None:
    request = job_pb2.OutputRequest(uuid=hostile.job)
    try:
        next(iter(hostile.srv.stub("user").Output(request, timeout=10)))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
    else:
        raise AssertionError("a second stream got output past streams_per_caller = 1")


@then("within 90 seconds the server has closed the silent connection")
def _silent_closed(hostile: Hostile) -> None:
    client: RawCall = hostile.notes["silent"]
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
def _follow_again(hostile: Hostile) -> None:
    call = hostile.srv.stub("user").Output(job_pb2.OutputRequest(uuid=hostile.job), timeout=10)
    assert next(iter(call)).output
    call.cancel()


# ---- streams ----------------------------------------------------------------------------------


@when(parsers.re(r"the user client opens (?P<count>\d+) Output streams on that job, on "
                 r"(?P<connections>\d+) connections"))  # fmt: skip
def _user_streams(hostile: Hostile, floods: list[Flood], count: str, connections: str) -> None:
    hostile.notes["flood"] = start_flood(
        hostile, floods, "user", job=hostile.job, streams=int(count),
        connections=int(connections),
    )  # fmt: skip


@then(
    parsers.parse(
        '{ok:d} of them stream and {refused:d} fails with RESOURCE_EXHAUSTED saying "{says}"'
    )
)
def _some_refused(hostile: Hostile, ok: int, refused: int, says: str) -> None:
    counts = hostile.notes["flood"].counts
    assert counts.streaming == ok, counts.as_dict()
    assert counts.refused == {"RESOURCE_EXHAUSTED": refused}, counts.as_dict()
    assert says in counts.details["RESOURCE_EXHAUSTED"], counts.details


@then("the admin can still start a job, read its status and follow its output")
def _admin_still(hostile: Hostile) -> None:
    server = hostile.srv
    job = server.start_job(["echo", "admin served"])
    assert server.output(job, timeout=30) == b"admin served\n"
    assert server.status(job).exit_code == 0


@when("a client opens 3 Output streams on one connection at once, by hand")
def _raw_streams(hostile: Hostile) -> None:
    server = hostile.srv
    client = RawCall(server.port, admin_tls(server))
    request = grpc_message(job_pb2.OutputRequest(uuid=hostile.job).SerializeToString())
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
    hostile.notes.update(data=data, resets=resets)


@then("the first 2 streams receive output and the 3rd is reset with ENHANCE_YOUR_CALM")
def _third_reset(hostile: Hostile) -> None:
    data, resets = hostile.notes["data"], hostile.notes["resets"]
    assert set(data) == {1, 3}, f"DATA on streams {sorted(data)}, resets {resets}"
    assert resets == {5: ENHANCE_YOUR_CALM}, resets


@when("the admin and the user client each hold 2 Output streams on that job")
def _four_streams(hostile: Hostile, floods: list[Flood]) -> None:
    hostile.notes["floods"] = [
        start_flood(hostile, floods, kind, job=hostile.job, streams=2) for kind in ("admin", "user")
    ]


@then(parsers.parse('a Status call fails with RESOURCE_EXHAUSTED saying "{says}"'))
def _status_refused(hostile: Hostile, says: str) -> None:
    try:
        hostile.srv.status(hostile.job)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        assert says in (exc.details() or ""), exc.details()
    else:
        raise AssertionError("Status was answered past rpcs_in_flight")


@then("once one stream is cancelled, a Status call answers")
def _status_after(hostile: Hostile) -> None:
    hostile.notes["floods"][0].stop()
    time.sleep(0.2)
    assert hostile.srv.status(hostile.job).status == "RUNNING"


@then(
    parsers.parse(
        "at most {cap:d} of them stream (streams_per_caller for 1024 fds), nearly all the rest "
        "get RESOURCE_EXHAUSTED"
    )
)
def _flood_capped(hostile: Hostile, cap: int) -> None:
    # "Nearly": with more than 1 000 calls arriving at once, gRPC core's own cap on calls
    # waiting for the application (grpc.server.max_pending_requests, dropping at random
    # between 1 000 and 3 000) cancels a few before jobmgr sees them: 0 to 2 of 1 100 here.
    counts = hostile.notes["flood"].counts
    assert 0 < counts.streaming <= cap, (cap, counts.as_dict())
    refused = counts.tried - counts.streaming
    assert set(counts.refused) <= {"RESOURCE_EXHAUSTED", "CANCELLED"}, counts.as_dict()
    assert counts.refused["RESOURCE_EXHAUSTED"] >= refused * 0.99, counts.as_dict()
    assert sum(counts.refused.values()) == refused, counts.as_dict()


@then("the server holds fewer than 1024 file descriptors")
def _fds_below(hostile: Hostile) -> None:
    fds = usage(hostile.srv.pid).fds
    assert fds < 1024, fds


@when("the user client holds 1 Output stream on that job and tries 200 more")
def _refusal_flood(hostile: Hostile, floods: list[Flood]) -> None:
    start_flood(hostile, floods, "user", job=hostile.job, streams=1)
    hostile.notes["flood"] = start_flood(
        hostile, floods, "user", job=hostile.job, streams=200, connections=2
    )


@then("all 200 fail with RESOURCE_EXHAUSTED")
def _all_refused(hostile: Hostile) -> None:
    counts = hostile.notes["flood"].counts
    assert counts.refused == {"RESOURCE_EXHAUSTED": 200}, counts.as_dict()


@then(parsers.parse('the server logged at most 5 "refused" lines for them, one saying how many '
                    "it left out"))  # fmt: skip
def _few_lines(hostile: Hostile) -> None:
    def lines() -> list[str]:
        return log_lines(hostile, " refused ", "limit=streams_per_caller")

    deadline = time.monotonic() + 15  # the count comes once the 10 s window has passed
    while not any("not_logged=" in line for line in lines()) and time.monotonic() < deadline:
        time.sleep(0.2)
    found = lines()
    assert 1 <= len(found) <= 6, "\n".join(found)
    # A line logged for a refusal names its method; any may add how many were left out.
    logged = sum(1 for line in found if "method=" in line)
    left_out = sum(int(m[1]) for line in found if (m := re.search(r"not_logged=(\d+)", line)))
    assert logged <= 5 and logged + left_out == 200, "\n".join(found)
