"""Steps shared by the scenarios that run the jobmgr-server program (security, bad_input,
contained, confinement, load, crash, cli, operator, durability): starting it with flags or a
configuration, how a job ended, what it leaves behind once stopped, and what it holds after
serving."""

from __future__ import annotations

import shlex
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pytest_bdd import given, parsers, then

from harness.figures import report
from harness.poll import eventually
from harness.procs import Usage, alive, marked_processes, usage
from harness.rpc import call
from harness.server import ServerProgram
from jobmgr.api import job_pb2

from .fixtures_scenario import Scenario
from .fixtures_server import LaunchServer

# ---- starting it ------------------------------------------------------------------------------


@given(parsers.parse('the jobmgr-server program is running with "{flags}"'))
@given(parsers.parse('the jobmgr-server program is running with flags "{flags}"'))
def _server_with_flags(launch_server: LaunchServer, scenario: Scenario, flags: str) -> None:
    scenario.server = launch_server(*shlex.split(flags))


@given("the jobmgr-server program is running with this configuration:")
def _server_with_config(launch_server: LaunchServer, scenario: Scenario, docstring: str) -> None:
    scenario.server = launch_server(config=docstring)


# ---- its log ----------------------------------------------------------------------------------


def mark_log(scenario: Scenario) -> None:
    """Remember where the server's log ends now, for new_log."""
    scenario.notes["log_mark"] = len(scenario.program.stderr)


def new_log(scenario: Scenario) -> str:
    """What the server has logged since mark_log."""
    return scenario.program.stderr[scenario.notes.get("log_mark", 0) :]


# ---- what it leaves ---------------------------------------------------------------------------


@then("no job was started")
def _no_job(scenario: Scenario) -> None:
    server = scenario.program
    assert server.list_ids() == [], "a refused client left a job record"
    assert not any((server.state_dir / "jobs").iterdir()), "a refused client left a job dir"
    assert marked_processes(server.marker) == [], "a refused client's command runs"


@then("once the server is stopped nothing of any job is left: no process, cgroup or launcher")
def _nothing_left(scenario: Scenario) -> None:
    server = scenario.program
    launcher = server.launcher_pid()
    assert server.terminate() == 0, server.stderr[-2000:]
    if launcher is not None:
        eventually(lambda: not alive(launcher), 15.0, "the launcher to exit")
    eventually(lambda: not server.job_cgroups(), 10.0, "the job cgroups to be removed")
    eventually(lambda: not marked_processes(server.marker), 10.0, "the jobs' processes to end")


# ---- what it holds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Holdings:
    """What the server side holds: the server's and the launcher's fds and threads, and the
    cgroups under the server's parent."""

    server: Usage
    launcher: Usage | None
    cgroups: int

    def growth_over(self, before: Holdings) -> list[str]:
        """What grew beyond a little slack (gRPC and asyncio keep small pools)."""
        grown = []
        if self.server.fds > before.server.fds + 6:
            grown.append(f"server fds {before.server.fds} -> {self.server.fds}")
        if self.server.threads > before.server.threads + 3:
            grown.append(f"server threads {before.server.threads} -> {self.server.threads}")
        if self.launcher and before.launcher and self.launcher.fds > before.launcher.fds + 6:
            grown.append(f"launcher fds {before.launcher.fds} -> {self.launcher.fds}")
        if self.cgroups > before.cgroups:
            grown.append(f"cgroups {before.cgroups} -> {self.cgroups}")
        return grown


def holdings(server: ServerProgram, settle: float = 3.0) -> Holdings:
    """The server side's holdings once it is quiet: the smallest seen within ``settle`` s
    (closed connections and finished jobs take a moment to be let go)."""
    best: Holdings | None = None
    deadline = time.monotonic() + settle
    while True:
        launcher = server.launcher_pid()
        now = Holdings(
            usage(server.pid), usage(launcher) if launcher else None, len(server.job_cgroups())
        )
        if best is None or (now.server.fds, now.server.threads, now.cgroups) < (
            best.server.fds,
            best.server.threads,
            best.cgroups,
        ):
            best = now
        if time.monotonic() > deadline:
            return best
        time.sleep(0.25)


@given("the server's holdings are measured after it has served every kind of call")
def _measured(scenario: Scenario) -> None:
    server = scenario.program
    _serve_every_kind(server)
    scenario.notes["before"] = holdings(server)


def _serve_every_kind(server: ServerProgram) -> None:
    job = server.start_job(["echo", "warm"])
    server.wait_ended(job)
    stub = server.stub()
    call(stub.Stop, job_pb2.StopRequest(uuid=job))
    call(stub.Status, job_pb2.StatusRequest(uuid="not-a-uuid"))
    call(stub.Output, job_pb2.OutputRequest(uuid=str(uuid.uuid4())))
    call(server.stub("user").Start, job_pb2.StartRequest(cmd="true"))
    call(server.raw_method("Status"), b"\xff\xff")
    with ThreadPoolExecutor(8) as pool:  # fills whatever thread pool List runs in
        list(pool.map(lambda _: call(stub.List, job_pb2.ListRequest()), range(16)))
    server.close_channels()


@then("the server still serves and holds nothing more than before")
def _still_serves(scenario: Scenario) -> None:
    server = scenario.program
    job = server.start_job(["echo", "still serving"])
    assert server.output(job) == b"still serving\n"
    server.close_channels()
    after = holdings(server)
    before = scenario.notes["before"]
    report(f"holdings before {before}, after {after}")
    grown = after.growth_over(before)
    assert not grown, "the server holds more than before: " + "; ".join(grown)


# ---- how a job ended ---------------------------------------------------------------------------


@then(
    parsers.parse("within {seconds:d} seconds the job is FAILED by signal 9 with its OOM flag set")
)
def _oom(scenario: Scenario, seconds: int) -> None:
    status = scenario.program.wait_ended(scenario.job, timeout=seconds)
    failed = (job_pb2.JOB_STATE_FAILED, 9, True)
    assert (status.state, status.signal, status.oom_killed) == failed, status
    state = job_pb2.JobState.Name(status.state)
    report(f"the job: {state} signal {status.signal}, reason {status.reason!r}")
