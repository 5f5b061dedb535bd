"""Steps shared by the scenarios that drive the real programs (cli, operator, durability).

A step module pulls them in with ``from ._cli_steps import *`` (see _grpc_steps for why).
The last program run is in ``api.notes["ran"]``; the server in ``api.notes["server_process"]``.
In a command, the word JOB stands for the id of the last job started.
"""

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

from jobmgr.api import job_pb2, job_pb2_grpc

from ._grpc_steps import KIND, ApiScenario, collect, eventually, unescape
from .fixtures_server import (
    ServerProcess,
    StartServerProcess,
    program,
    program_env,
    run_program,
)


def cli_server(api: ApiScenario) -> ServerProcess:
    server: ServerProcess = api.notes["server_process"]
    return server


def with_job(api: ApiScenario, text: str) -> str:
    return text.replace("JOB", api.job) if api.job else text


def ran(api: ApiScenario) -> subprocess.CompletedProcess[bytes]:
    done: subprocess.CompletedProcess[bytes] = api.notes["ran"]
    return done


def run_client(
    api: ApiScenario, kind: str, arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run jobmgr-client with ``kind``'s certificate against the scenario's server."""
    args = shlex.split(with_job(api, arguments))
    began = time.monotonic()
    done = run_program("jobmgr-client", *cli_server(api).client_args(kind), *args, env=env)
    api.notes["ran"], api.notes["ran_seconds"] = done, time.monotonic() - began
    return done


def launch_server(
    api: ApiScenario,
    start: StartServerProcess,
    *flags: str,
    config: str | None = None,
    state_tmpfs_bytes: int | None = None,
) -> ServerProcess:
    """Start jobmgr-server, remembering how, so that ``relaunch_server`` starts the next one
    (after a crash) the same way on the same state dir."""
    api.notes["server_launch"] = (flags, config, state_tmpfs_bytes)
    server = start(None, *flags, config=config, state_tmpfs_bytes=state_tmpfs_bytes)
    api.notes["server_process"] = server
    return server


def relaunch_server(api: ApiScenario, start: StartServerProcess) -> ServerProcess:
    flags, config, tmpfs = api.notes.get("server_launch", ((), None, None))
    return launch_server(api, start, *flags, config=config, state_tmpfs_bytes=tmpfs)


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


@given(parsers.re(f'the {KIND} is following "(?P<command>.+)" with jobmgr-client run(?P<flags>.*)'))
def _following(
    start_server_process: StartServerProcess,
    api: ApiScenario,
    followers: list[Follower],
    kind: str,
    command: str,
    flags: str,
) -> None:
    server_process = api.notes.get("server_process") or start_server_process()
    api.notes["server_process"] = server_process
    argv = [*program("jobmgr-client"), *server_process.client_args(kind), "run"]
    argv += [*shlex.split(flags), "--", *shlex.split(command)]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=program_env()
    )
    follower = Follower(process)
    follower.collect()
    followers.append(follower)
    api.notes["follower"] = follower
    eventually(lambda: bool(follower.stdout), 20, "the followed job to print")
    with server_process.channel("admin") as channel:
        stub = job_pb2_grpc.JobManagerStub(channel)
        jobs = stub.List(job_pb2.ListRequest(state=job_pb2.JOB_STATE_RUNNING), timeout=10).jobs
    assert len(jobs) == 1, jobs
    api.job = jobs[0].uuid


@when("the follower gets Ctrl-C")
def _ctrl_c(api: ApiScenario) -> None:
    api.notes["follower"].process.send_signal(signal.SIGINT)


@then(parsers.parse("the follower exits {code:d} within {seconds:d} seconds"))
def _follower_exits(api: ApiScenario, code: int, seconds: int) -> None:
    follower: Follower = api.notes["follower"]
    assert follower.finish(seconds) == code, bytes(follower.stderr)
    assert b"Traceback" not in follower.stderr, bytes(follower.stderr)


@then(parsers.parse('the follower\'s stdout is "{text}"'))
def _follower_stdout(api: ApiScenario, text: str) -> None:
    assert bytes(api.notes["follower"].stdout) == unescape(text).encode()


@then(parsers.parse('the follower\'s stderr contains "{text}"'))
def _follower_stderr(api: ApiScenario, text: str) -> None:
    stderr = bytes(api.notes["follower"].stderr).decode()
    assert with_job(api, text) in stderr, stderr


# ---- given ------------------------------------------------------------------------------------


@given("the jobmgr-server program is running with this configuration:")
def _server_with_config(
    start_server_process: StartServerProcess, api: ApiScenario, docstring: str
) -> None:
    launch_server(api, start_server_process, config=docstring)


@given(parsers.parse('the jobmgr-server program is running with flags "{flags}"'))
def _server_with_flags(
    start_server_process: StartServerProcess, api: ApiScenario, flags: str
) -> None:
    launch_server(api, start_server_process, *shlex.split(flags))


@given(parsers.parse("the admin has started {count:d} jobs"))
def _started_jobs(api: ApiScenario, count: int) -> None:
    with cli_server(api).channel("admin") as channel:
        stub = job_pb2_grpc.JobManagerStub(channel)
        request = job_pb2.StartRequest(cmd="true")
        api.notes["ids"] = [stub.Start(request, timeout=30).uuid for _ in range(count)]


@when("the server is killed with SIGKILL and started again on the same port")
def _crash_and_restart(api: ApiScenario, start_server_process: StartServerProcess) -> None:
    server = cli_server(api)
    port = server.port
    server.crash()  # the launcher and the job live on
    time.sleep(1)  # the follower finds the door closed at least once
    api.notes["server_process"] = start_server_process(None, "--port", str(port))


# ---- when -------------------------------------------------------------------------------------


@when(parsers.re(f"the {KIND} runs jobmgr-client (?P<arguments>.+)"))
def _client_runs(api: ApiScenario, kind: str, arguments: str) -> None:
    run_client(api, kind, arguments)


@when(parsers.parse('the job has written "{text}"'))
def _has_written(api: ApiScenario, text: str) -> None:
    want = unescape(text).encode()
    with cli_server(api).channel("admin") as channel:
        stub = job_pb2_grpc.JobManagerStub(channel)

        def written() -> bool:
            request = job_pb2.OutputRequest(uuid=api.job, no_follow=True)
            return collect(stub.Output(request, timeout=10))["stdout"] == want

        eventually(written, 20, f"the job to write {want!r}")


# ---- then -------------------------------------------------------------------------------------


@then(parsers.parse("jobmgr-client status says the job is {state}"))
def _status_says(api: ApiScenario, state: str) -> None:
    done = run_client(api, "admin", "status --json JOB")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == state, done.stdout


@then(parsers.parse("it exits {code:d}"))
def _exits(api: ApiScenario, code: int) -> None:
    done = ran(api)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert b"Traceback" not in done.stderr, done.stderr.decode()


@then(parsers.parse("it exits {code:d} within {seconds:d} seconds"))
def _exits_within(api: ApiScenario, code: int, seconds: int) -> None:
    _exits(api, code)
    assert api.notes["ran_seconds"] < seconds, api.notes["ran_seconds"]


@then("it exits 0 and prints the new job's id")
def _prints_id(api: ApiScenario) -> None:
    _exits(api, 0)
    text = ran(api).stdout.decode().strip()
    assert len(text) == 36 and text.count("-") == 4, text
    api.job = text
    api.notes.setdefault("started", []).append(text)


@then(parsers.parse('its stdout is "{stdout}" and its stderr is "{stderr}"'))
def _streams(api: ApiScenario, stdout: str, stderr: str) -> None:
    done = ran(api)
    assert (done.stdout, done.stderr) == (unescape(stdout).encode(), unescape(stderr).encode())


@then(parsers.re(r'its stdout is "(?P<stdout>[^"]*)"$'))
def _stdout_is(api: ApiScenario, stdout: str) -> None:
    assert ran(api).stdout == unescape(stdout).encode(), ran(api)


@then("its stderr is empty")
def _stderr_empty(api: ApiScenario) -> None:
    assert ran(api).stderr == b"", ran(api).stderr


@then(parsers.parse("its stdout is the bytes {hexdump}"))
def _stdout_bytes(api: ApiScenario, hexdump: str) -> None:
    assert ran(api).stdout == bytes.fromhex(hexdump)


@then(parsers.parse('its stdout contains "{text}"'))
def _stdout_contains(api: ApiScenario, text: str) -> None:
    assert with_job(api, text) in ran(api).stdout.decode(), ran(api).stdout


@then(parsers.parse('its stderr contains "{text}"'))
def _stderr_contains_text(api: ApiScenario, text: str) -> None:
    assert with_job(api, text) in ran(api).stderr.decode(), ran(api).stderr


@then(parsers.parse('its stdout has a line with "{first}", "{second}" and "{third}"'))
def _line_with(api: ApiScenario, first: str, second: str, third: str) -> None:
    wanted = [with_job(api, word) for word in (first, second, third)]
    lines = ran(api).stdout.decode().splitlines()
    assert any(all(word in line for word in wanted) for line in lines), lines


@then(parsers.parse('its stdout mentions "{first}", "{second}" and "{third}"'))
def _mentions(api: ApiScenario, first: str, second: str, third: str) -> None:
    text = ran(api).stdout.decode()
    assert all(word in text for word in (first, second, third)), text


@then(parsers.parse('its stderr is one line: "{text}"'))
def _stderr_exactly(api: ApiScenario, text: str) -> None:
    assert ran(api).stderr.decode() == with_job(api, text) + "\n", ran(api).stderr


@then(parsers.parse('its stderr is one line containing "{text}"'))
def _stderr_contains(api: ApiScenario, text: str) -> None:
    stderr = ran(api).stderr.decode()
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert with_job(api, text) in stderr, stderr
