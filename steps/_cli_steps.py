"""Steps shared by the scenarios that run our programs (cli, operator, durability): running
jobmgr-client against the scenario's jobmgr-server, and what a program run printed and how it
exited. The last run is in ``scenario.notes["ran"]``; in a command, the word JOB stands for the
id of the scenario's job."""

from __future__ import annotations

import json
import shlex
import subprocess
import time

from pytest_bdd import parsers, then, when

from harness.programs import run_program

from ._phrases import KIND, unescape
from .fixtures_scenario import Scenario


def with_job(scenario: Scenario, text: str) -> str:
    return text.replace("JOB", scenario.job) if scenario.job else text


def ran(scenario: Scenario) -> subprocess.CompletedProcess[bytes]:
    """The last program run."""
    done: subprocess.CompletedProcess[bytes] = scenario.notes["ran"]
    return done


def run_client(
    scenario: Scenario, kind: str, arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run jobmgr-client with ``kind``'s certificate against the scenario's server."""
    args = shlex.split(with_job(scenario, arguments))
    began = time.monotonic()
    done = run_program("jobmgr-client", *scenario.server.client_args(kind), *args, env=env)
    scenario.notes["ran"], scenario.notes["ran_seconds"] = done, time.monotonic() - began
    return done


# ---- when -------------------------------------------------------------------------------------


@when(parsers.re(f"the {KIND} runs jobmgr-client (?P<arguments>.+)"))
def _client_runs(scenario: Scenario, kind: str, arguments: str) -> None:
    run_client(scenario, kind, arguments)


# ---- then -------------------------------------------------------------------------------------


@then(parsers.parse("jobmgr-client status says the job is {state}"))
def _status_says(scenario: Scenario, state: str) -> None:
    done = run_client(scenario, "admin", "status --json JOB")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == state, done.stdout


@then(parsers.parse("it exits {code:d}"))
def _exits(scenario: Scenario, code: int) -> None:
    done = ran(scenario)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert b"Traceback" not in done.stderr, done.stderr.decode()


@then(parsers.parse("it exits {code:d} within {seconds:d} seconds"))
def _exits_within(scenario: Scenario, code: int, seconds: int) -> None:
    _exits(scenario, code)
    assert scenario.notes["ran_seconds"] < seconds, scenario.notes["ran_seconds"]


@then("it exits 0 and prints the new job's id")
def _prints_id(scenario: Scenario) -> None:
    _exits(scenario, 0)
    text = ran(scenario).stdout.decode().strip()
    assert len(text) == 36 and text.count("-") == 4, text
    scenario.job = text


@then(parsers.parse('its stdout is "{stdout}" and its stderr is "{stderr}"'))
def _streams(scenario: Scenario, stdout: str, stderr: str) -> None:
    done = ran(scenario)
    assert (done.stdout, done.stderr) == (unescape(stdout).encode(), unescape(stderr).encode())


@then(parsers.re(r'its stdout is "(?P<stdout>[^"]*)"$'))
def _stdout_is(scenario: Scenario, stdout: str) -> None:
    assert ran(scenario).stdout == unescape(stdout).encode(), ran(scenario)


@then("its stderr is empty")
def _stderr_empty(scenario: Scenario) -> None:
    assert ran(scenario).stderr == b"", ran(scenario).stderr


@then(parsers.parse("its stdout is the bytes {hexdump}"))
def _stdout_bytes(scenario: Scenario, hexdump: str) -> None:
    assert ran(scenario).stdout == bytes.fromhex(hexdump)


@then(parsers.parse('its stdout contains "{text}"'))
def _stdout_contains(scenario: Scenario, text: str) -> None:
    assert with_job(scenario, text) in ran(scenario).stdout.decode(), ran(scenario).stdout


@then(parsers.parse('its stderr contains "{text}"'))
def _stderr_contains_text(scenario: Scenario, text: str) -> None:
    assert with_job(scenario, text) in ran(scenario).stderr.decode(), ran(scenario).stderr


@then(parsers.parse('its stdout has a line with "{first}", "{second}" and "{third}"'))
def _line_with(scenario: Scenario, first: str, second: str, third: str) -> None:
    wanted = [with_job(scenario, word) for word in (first, second, third)]
    lines = ran(scenario).stdout.decode().splitlines()
    assert any(all(word in line for word in wanted) for line in lines), lines


@then(parsers.parse('its stdout mentions "{first}", "{second}" and "{third}"'))
def _mentions(scenario: Scenario, first: str, second: str, third: str) -> None:
    text = ran(scenario).stdout.decode()
    assert all(word in text for word in (first, second, third)), text


@then(parsers.parse('its stderr is one line: "{text}"'))
def _stderr_exactly(scenario: Scenario, text: str) -> None:
    assert ran(scenario).stderr.decode() == with_job(scenario, text) + "\n", ran(scenario).stderr


@then(parsers.parse('its stderr is one line containing "{text}"'))
def _stderr_contains(scenario: Scenario, text: str) -> None:
    stderr = ran(scenario).stderr.decode()
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert with_job(scenario, text) in stderr, stderr
