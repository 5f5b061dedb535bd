"""Steps for features/lifecycle.feature."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pytest_bdd import parsers, scenarios, then, when

from harness.poll import eventually
from harness.procs import marked_processes
from harness.speed import scaled
from harness.worker import collected
from jobmgr.worker import JobNotFound, Stream, Worker

from ._worker_steps import start, try_start
from .fixtures_scenario import Scenario

scenarios("lifecycle.feature")


@when("I try to start a file without execute permission")
def _not_executable(worker: Worker, scenario: Scenario) -> None:
    # A file the job's view has (not one in the host's /tmp: the job's /tmp is its own).
    assert os.stat("/etc/passwd").st_mode & 0o111 == 0
    try_start(worker, scenario, "/etc/passwd")


@then("its start and end times are recorded")
def _times(worker: Worker, scenario: Scenario) -> None:
    status = worker.status(scenario.job)
    assert status.ended_at is not None
    assert 0 < status.started_at <= status.ended_at <= time.time()


@then("the job is listed")
def _listed(worker: Worker, scenario: Scenario) -> None:
    assert scenario.job in [s.id for s in worker.list()]


@then("no job is listed")
def _none_listed(worker: Worker) -> None:
    assert worker.list() == []


@when(parsers.parse('I ask for the status of job "{job_id}"'))
def _ask(worker: Worker, scenario: Scenario, job_id: str) -> None:
    try:
        worker.status(job_id)
    except JobNotFound as exc:
        scenario.notes["error"] = exc


@then(parsers.parse("the stop took between {low:g} and {high:g} seconds"))
def _stop_between(scenario: Scenario, low: float, high: float) -> None:
    # The grace period (low) is wall-clock time on any machine; the rest scales with its speed.
    assert low <= scenario.notes["stop_took"] <= low + scaled(high - low), scenario.notes


@then(parsers.parse("the stop took less than {high:g} seconds"))
def _stop_under(scenario: Scenario, high: float) -> None:
    assert scenario.notes["stop_took"] < scaled(high), scenario.notes["stop_took"]


@when("I start a job that leaves a setsid daemon running")
def _daemon(worker: Worker, scenario: Scenario) -> None:
    # A sleep length no other process on the host has, to find the daemon by its argv.
    marker = scenario.notes["marker"] = f"{1000 + int.from_bytes(os.urandom(3), 'big') / 1e7:.7f}"
    script = f"setsid sh -c 'sleep {marker}' & echo forked; sleep 1000"
    start(worker, scenario, ["sh", "-c", script])
    eventually(lambda: bool(marked_processes(marker)), 5, "the daemon to appear")


@then("no process of the daemon is left on the host")
def _daemon_gone(scenario: Scenario) -> None:
    assert marked_processes(scenario.notes["marker"]) == []


@then("the output shows no zombie process")
def _no_zombie(worker: Worker, scenario: Scenario) -> None:
    lines = collected(worker, scenario.job)[Stream.STDOUT].decode().splitlines()
    assert lines, "ps printed nothing"
    assert not [line for line in lines if line.strip().startswith("Z")], lines


@then("the launcher has no zombie children")
def _launcher_clean(worker: Worker) -> None:
    launcher = worker._launcher.process
    assert launcher is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        assert not (ppid == launcher.pid and state == "Z"), f"zombie {entry.name}"
