"""Steps shared by the scenarios that run our programs (cli, operator, durability): running
jobmgr-client against the scenario's jobmgr-server, and what a program run printed and how it
exited, and a ``jobmgr-client run`` left following a job (the follower). The last run is in
``scenario.notes["ran"]``; in a command, the word JOB stands for the id of the scenario's job."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pytest_bdd import given, parsers, then, when

from harness.poll import eventually
from harness.programs import program, program_env, run_program
from harness.server import ServerProgram
from jobmgr.api import job_pb2

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


# ---- a jobmgr-client following a job in the background ----------------------------------------


@dataclass
class Follower:
    """A ``jobmgr-client run`` left running, its stdout and stderr collected as they come."""

    process: subprocess.Popen[bytes]
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    readers: list[threading.Thread] = field(default_factory=list)

    def collect(self) -> None:
        for pipe, sink in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            reader = threading.Thread(target=_drain, args=(pipe, sink), daemon=True)
            reader.start()
            self.readers.append(reader)

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(5)
        return code


def _drain(pipe: Any, sink: bytearray) -> None:
    for chunk in iter(lambda: pipe.read1(65536), b""):
        sink.extend(chunk)


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    running: list[Follower] = []
    yield running
    for follower in running:
        if follower.process.poll() is None:
            follower.process.kill()
        follower.finish(10)


@given(
    parsers.re(
        f'the {KIND} is following "(?P<command>.+)" with jobmgr-client (?P<options>.*?)run'
        "(?P<flags>.*)"
    )
)
def _following(
    server_process: ServerProgram,
    scenario: Scenario,
    followers: list[Follower],
    kind: str,
    command: str,
    options: str,
    flags: str,
) -> None:
    scenario.server = server_process
    argv = [*program("jobmgr-client"), *server_process.client_args(kind), *shlex.split(options)]
    argv += ["run", *shlex.split(flags), "--", *shlex.split(command)]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=program_env()
    )
    follower = Follower(process)
    follower.collect()
    followers.append(follower)
    scenario.notes["follower"] = follower
    eventually(lambda: bool(follower.stdout), 20, "the followed job to print")
    request = job_pb2.ListRequest(state=job_pb2.JOB_STATE_RUNNING)
    jobs = server_process.stub("admin").List(request, timeout=10).jobs
    assert len(jobs) == 1, jobs
    scenario.job = jobs[0].uuid


@when("the follower gets Ctrl-C")
def _ctrl_c(scenario: Scenario) -> None:
    scenario.notes["follower"].process.send_signal(signal.SIGINT)


@then(parsers.parse("the follower exits {code:d} within {seconds:d} seconds"))
def _follower_exits(scenario: Scenario, code: int, seconds: int) -> None:
    follower: Follower = scenario.notes["follower"]
    assert follower.finish(seconds) == code, bytes(follower.stderr)
    assert b"Traceback" not in follower.stderr, bytes(follower.stderr)


@then(parsers.parse('the follower\'s stdout is "{text}"'))
def _follower_stdout(scenario: Scenario, text: str) -> None:
    assert bytes(scenario.notes["follower"].stdout) == unescape(text).encode()


@then(parsers.parse('the follower\'s stderr contains "{text}"'))
def _follower_stderr(scenario: Scenario, text: str) -> None:
    stderr = bytes(scenario.notes["follower"].stderr).decode()
    assert with_job(scenario, text) in stderr, stderr


@given(parsers.parse("the admin has started {count:d} jobs"))
def _started_jobs(scenario: Scenario, count: int) -> None:
    stub = scenario.server.stub("admin")
    request = job_pb2.StartRequest(cmd="true")
    scenario.notes["ids"] = [stub.Start(request, timeout=30).uuid for _ in range(count)]


@when("the server is killed with SIGKILL and started again on the same port")
def _crash_and_restart(scenario: Scenario) -> None:
    server = scenario.program
    port = server.port
    server.kill9()  # the launcher and the job live on
    time.sleep(1)  # a client following the job finds the door closed at least once
    server.argv += ["--port", str(port)]  # the last --port wins: the one clients know
    server.start()


@when("the server is killed with SIGKILL")
def _crash(scenario: Scenario) -> None:
    scenario.program.kill9()  # the launcher and the job live on


@when("the server is started again on the same port")
def _restart(scenario: Scenario) -> None:
    server = scenario.program
    server.argv += ["--port", str(server.port)]  # the last --port wins: the one clients know
    server.start()


@when(
    "the server and its launcher are killed with SIGKILL, and the server started again on the "
    "same port"
)
def _crash_with_launcher(scenario: Scenario) -> None:
    server = scenario.program
    port = server.port
    server.kill9_with_launcher()
    server.argv += ["--port", str(port)]
    server.start()


# ---- run's ending line ------------------------------------------------------------------------


def ending(scenario: Scenario, text: str) -> str:
    """``text`` with JOB8 as the first 8 hex digits of the scenario's job: the last one the
    server started, when the scenario has not named one."""
    if "JOB8" in text:
        if not scenario.job:
            jobs = scenario.server.stub("admin").List(job_pb2.ListRequest(), timeout=10).jobs
            scenario.job = jobs[-1].uuid
        text = text.replace("JOB8", scenario.job[:8])
    return with_job(scenario, text)


def _split_last_line(stderr: bytes) -> tuple[bytes, str]:
    """What came before run's last line on stderr, and that line."""
    assert stderr.endswith(b"\n"), stderr
    before, _, last = stderr[:-1].rpartition(b"\n")
    return (before + b"\n" if before else b""), last.decode()


@then(parsers.parse('its stderr is "{text}" and then the line "{line}"'))
def _stderr_then_line(scenario: Scenario, text: str, line: str) -> None:
    stderr = ran(scenario).stderr
    assert stderr == unescape(text).encode() + ending(scenario, line).encode() + b"\n", stderr


@then(parsers.parse('its stderr is only the line "{line}"'))
def _stderr_only_line(scenario: Scenario, line: str) -> None:
    assert ran(scenario).stderr.decode() == ending(scenario, line) + "\n", ran(scenario).stderr


@then(parsers.parse('its stderr is only a line starting with "{start}"'))
def _stderr_only_line_starting(scenario: Scenario, start: str) -> None:
    stderr = ran(scenario).stderr.decode()
    assert stderr.startswith(ending(scenario, start)) and stderr.count("\n") == 1, stderr


@then(parsers.parse('its last line on stderr is "{line}"'))
def _last_line(scenario: Scenario, line: str) -> None:
    assert _split_last_line(ran(scenario).stderr)[1] == ending(scenario, line), ran(scenario)


@then(parsers.parse('its last line on stderr starts with "{start}"'))
def _last_line_starts(scenario: Scenario, start: str) -> None:
    last = _split_last_line(ran(scenario).stderr)[1]
    assert last.startswith(ending(scenario, start)), last


@then(parsers.parse('the follower\'s last line on stderr {how} "{text}"'))
def _follower_last_line(scenario: Scenario, how: str, text: str) -> None:
    last = _split_last_line(bytes(scenario.notes["follower"].stderr))[1]
    wanted = ending(scenario, text)
    checks = {
        "is": last == wanted,
        "starts with": last.startswith(wanted),
        "contains": wanted in last,
    }
    assert checks[how], last


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
    scenario.notes.setdefault("started", []).append(text)


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
