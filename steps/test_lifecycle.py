"""Steps for features/lifecycle.feature."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pytest_bdd import parsers, scenarios, then, when

from jobmgr.worker import JobNotFound, Stream, Worker

from .fixtures_worker import collected, start, try_start

scenarios("lifecycle.feature")


@when("I try to start a file without execute permission")
def _not_executable(worker: Worker, ctx: dict[str, Any]) -> None:
    # A file the job's view has (not one in the host's /tmp: the job's /tmp is its own).
    assert os.stat("/etc/passwd").st_mode & 0o111 == 0
    try_start(worker, ctx, "/etc/passwd")


@then("its start and end times are recorded")
def _times(worker: Worker, ctx: dict[str, Any]) -> None:
    status = worker.status(ctx["job"])
    assert status.ended_at is not None
    assert 0 < status.started_at <= status.ended_at <= time.time()


@then("the job is listed")
def _listed(worker: Worker, ctx: dict[str, Any]) -> None:
    assert ctx["job"] in [s.id for s in worker.list()]


@then("no job is listed")
def _none_listed(worker: Worker) -> None:
    assert worker.list() == []


@when(parsers.parse('I ask for the status of job "{job_id}"'))
def _ask(worker: Worker, ctx: dict[str, Any], job_id: str) -> None:
    try:
        worker.status(job_id)
    except JobNotFound as exc:
        ctx["error"] = exc


@then(parsers.parse("the stop took between {low:g} and {high:g} seconds"))
def _stop_between(ctx: dict[str, Any], low: float, high: float) -> None:
    assert low <= ctx["stop_took"] <= high, ctx["stop_took"]


@then(parsers.parse("the stop took less than {high:g} seconds"))
def _stop_under(ctx: dict[str, Any], high: float) -> None:
    assert ctx["stop_took"] < high, ctx["stop_took"]


@when("I start a job that leaves a setsid daemon running")
def _daemon(worker: Worker, ctx: dict[str, Any]) -> None:
    # A sleep length no other process on the host has, to find the daemon by its argv.
    ctx["marker"] = f"{1000 + int.from_bytes(os.urandom(3), 'big') / 1e7:.7f}"
    script = f"setsid sh -c 'sleep {ctx['marker']}' & echo forked; sleep 1000"
    start(worker, ctx, ["sh", "-c", script])
    deadline = time.monotonic() + 5
    while not _processes_with(ctx["marker"]):
        assert time.monotonic() < deadline, "the daemon never appeared"
        time.sleep(0.02)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@then("no process of the daemon is left on the host")
def _daemon_gone(ctx: dict[str, Any]) -> None:
    assert _processes_with(ctx["marker"]) == []


@then("the output shows no zombie process")
def _no_zombie(worker: Worker, ctx: dict[str, Any]) -> None:
    lines = collected(worker, ctx["job"])[Stream.STDOUT].decode().splitlines()
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
