"""Steps shared by the hostile-conditions features (security, bad_input, contained, load,
crash). A step module pulls them in with ``from ._hostile_steps import *``.

The scenarios talk to the real ``jobmgr-server`` program (see _hostile_server); what one step
learns for a later one goes in ``hostile.notes``.
"""

from __future__ import annotations

import shlex
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from pytest_bdd import given, parsers, then

from jobmgr.api import job_pb2

from ._grpc_steps import eventually
from ._hostile_props import holdings
from ._hostile_server import (  # noqa: F401  # launch_server, scenario_marker: fixtures
    HostileServer,
    LaunchServer,
    alive,
    launch_server,
    marked_processes,
    scenario_marker,
)

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
SERVICE = "/job.JobManager/"
# A message is "clear" when a person can read it in one go.
MAX_DETAILS = 1024


@dataclass
class Outcome:
    """How one RPC went."""

    code: grpc.StatusCode
    details: str = ""
    value: Any = None
    seconds: float = 0.0


def outcome(method: Any, request: Any, *, timeout: float = 30.0) -> Outcome:
    """Make a unary call, or drain a streaming one, catching its status and timing it."""
    began = time.monotonic()
    try:
        value = method(request, timeout=timeout)
        if not hasattr(value, "SerializeToString") and not isinstance(value, bytes):
            value = list(value)
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "", None, time.monotonic() - began)
    return Outcome(grpc.StatusCode.OK, "", value, time.monotonic() - began)


@dataclass
class Hostile:
    """What one hostile scenario's steps pass to each other."""

    server: HostileServer | None = None
    job: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def srv(self) -> HostileServer:
        assert self.server is not None, "no jobmgr-server was started"
        return self.server


@pytest.fixture
def hostile() -> Hostile:
    return Hostile()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    assert ordered, "no values"
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def report(line: str) -> None:
    """A figure for SECURITY.md: printed (shown with pytest -s or -rP)."""
    print(f"[hostile] {line}", flush=True)


def raw_method(server: HostileServer, method: str) -> Callable[..., Any]:
    """A stub method that sends bytes as they are and hands back the reply's bytes."""
    channel = server.channel()
    identity: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
    make = channel.unary_stream if method == "Output" else channel.unary_unary
    call: Callable[..., Any] = make(SERVICE + method, identity, identity)
    return call


def mark_log(hostile: Hostile) -> None:
    """Remember where the server's log ends now, for new_log."""
    hostile.notes["log_mark"] = len(hostile.srv.stderr)


def new_log(hostile: Hostile) -> str:
    """What the server has logged since mark_log."""
    return hostile.srv.stderr[hostile.notes.get("log_mark", 0) :]


# ---- given ------------------------------------------------------------------------------------


@given("the jobmgr-server program is running")
def _server(launch_server: LaunchServer, hostile: Hostile) -> None:  # noqa: F811
    hostile.server = launch_server()


@given(parsers.parse('the jobmgr-server program is running with "{flags}"'))
def _server_with(launch_server: LaunchServer, hostile: Hostile, flags: str) -> None:  # noqa: F811
    hostile.server = launch_server(*shlex.split(flags))


@given(parsers.parse('the admin has started "{command}"'))
def _admin_started(hostile: Hostile, command: str) -> None:
    hostile.job = hostile.srv.start_job(shlex.split(command))


# ---- then -------------------------------------------------------------------------------------


@then("no job was started")
def _no_job(hostile: Hostile) -> None:
    server = hostile.srv
    assert server.list_ids() == [], "a refused client left a job record"
    assert not any((server.state_dir / "jobs").iterdir()), "a refused client left a job dir"
    assert marked_processes(server.marker) == [], "a refused client's command runs"


@then("once the server is stopped nothing of any job is left: no process, cgroup or launcher")
def _nothing_left(hostile: Hostile) -> None:
    server = hostile.srv
    launcher = server.launcher_pid()
    assert server.terminate() == 0, server.stderr[-2000:]
    if launcher is not None:
        eventually(lambda: not alive(launcher), 15.0, "the launcher to exit")
    eventually(lambda: not server.job_cgroups(), 10.0, "the job cgroups to be removed")
    eventually(lambda: not marked_processes(server.marker), 10.0, "the jobs' processes to end")


# ---- measuring --------------------------------------------------------------------------------


@given("the server's holdings are measured after it has served every kind of call")
def _measured(hostile: Hostile) -> None:
    server = hostile.srv
    _serve_every_kind(server)
    hostile.notes["before"] = holdings(server)


def _serve_every_kind(server: HostileServer) -> None:
    job = server.start_job(["echo", "warm"])
    server.wait_ended(job)
    stub = server.stub()
    outcome(stub.Stop, job_pb2.StopRequest(uuid=job))
    outcome(stub.Status, job_pb2.StatusRequest(uuid="not-a-uuid"))
    outcome(stub.Output, job_pb2.OutputRequest(uuid=str(uuid.uuid4())))
    outcome(server.stub("user").Start, job_pb2.StartRequest(cmd="true"))
    outcome(raw_method(server, "Status"), b"\xff\xff")
    with ThreadPoolExecutor(8) as pool:  # fills whatever thread pool List runs in
        list(pool.map(lambda _: outcome(stub.List, job_pb2.ListRequest()), range(16)))
    server.close_channels()


@then("the server still serves and holds nothing more than before")
def _still_serves(hostile: Hostile) -> None:
    server = hostile.srv
    job = server.start_job(["echo", "still serving"])
    assert server.output(job) == b"still serving\n"
    server.close_channels()
    after = holdings(server)
    before = hostile.notes["before"]
    report(f"holdings before {before}, after {after}")
    grown = after.growth_over(before)
    assert not grown, "the server holds more than before: " + "; ".join(grown)
