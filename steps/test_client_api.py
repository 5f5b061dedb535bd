"""Steps for features/client_api.feature: jobmgr.client against real jobmgr-server programs."""

from __future__ import annotations

import asyncio
import io
import json
import shlex
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from harness.pki import ScenarioPKI
from harness.poll import eventually
from harness.programs import program_env
from harness.server import ServerProgram
from jobmgr.client import (
    AmbiguousJobId,
    AsyncClient,
    Client,
    JobmgrError,
    JobSpec,
    JobState,
    JobStatus,
    OutputChunk,
    Stream,
)

from ._phrases import KIND, unescape
from .fixtures_scenario import Scenario

scenarios("client_api.feature")

PROGRAM = (
    "import sys; from jobmgr.client import Client; sys.exit(Client.from_env().run(sys.argv[1:]))"
)


@pytest.fixture
def clients() -> Any:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def _client(scenario: Scenario) -> Client:
    client: Client = scenario.notes["client"]
    return client


def _connect(server: ServerProgram, kind: str) -> Client:
    pair = server.pki.client(kind)
    return Client(f"localhost:{server.port}", server.pki.ca_path, pair.cert_path, pair.key_path)


# ---- given ------------------------------------------------------------------------------------


@given("JOBMGR_ADDR, JOBMGR_CA, JOBMGR_CERT and JOBMGR_KEY name it and the admin certificate")
def _environment(scenario: Scenario, tmp_path: Path) -> None:
    server, admin = scenario.program, scenario.program.pki.client("admin")
    scenario.notes["env"] = {
        "JOBMGR_ADDR": f"localhost:{server.port}",
        "JOBMGR_CA": str(server.pki.ca_path),
        "JOBMGR_CERT": str(admin.cert_path),
        "JOBMGR_KEY": str(admin.key_path),
        "XDG_CONFIG_HOME": str(tmp_path),  # no config file of the machine's
    }


@given(parsers.re(f"a program has a Client for it with the {KIND} certificate"))
def _has_client(scenario: Scenario, clients: list[Client], kind: str) -> None:
    scenario.notes["client"] = _connect(scenario.program, kind)
    clients.append(scenario.notes["client"])


@given(
    parsers.parse(
        "a program has a Client for it with the admin certificate that tries a lost stream "
        "again for {seconds:d} seconds"
    )
)
def _client_giving_up(scenario: Scenario, clients: list[Client], seconds: int) -> None:
    server = scenario.program
    pair = server.pki.client("admin")
    scenario.notes["client"] = Client(
        f"localhost:{server.port}", server.pki.ca_path, pair.cert_path, pair.key_path,
        reconnect_for=seconds,
    )  # fmt: skip
    clients.append(scenario.notes["client"])


@given("a program has a Client for a port where nothing listens")
def _client_nowhere(scenario: Scenario, clients: list[Client], scenario_pki: ScenarioPKI) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    admin = scenario_pki.client("admin")
    scenario.notes["client"] = Client(
        f"localhost:{port}", scenario_pki.ca_path, admin.cert_path, admin.key_path
    )
    clients.append(scenario.notes["client"])


# ---- when -------------------------------------------------------------------------------------


@when(parsers.parse('a program runs "{command}" with Client.from_env().run'))
def _program_runs(scenario: Scenario, command: str) -> None:
    argv = [sys.executable, "-c", PROGRAM, *shlex.split(command)]
    scenario.notes["ran"] = subprocess.run(
        argv, capture_output=True, env={**program_env(), **scenario.notes["env"]}, timeout=60,
        check=False, cwd="/",
    )  # fmt: skip


@when(parsers.parse('the program starts "{command}" and waits for it'))
def _starts_and_waits(scenario: Scenario, command: str) -> None:
    client = _client(scenario)
    scenario.job = client.start(shlex.split(command))
    scenario.notes["status"] = client.wait(scenario.job)


@when(parsers.parse("the program calls {call}"))
def _calls(scenario: Scenario, call: str) -> None:
    client = _client(scenario)
    names: dict[str, Any] = {"client": client, "JobSpec": JobSpec}
    if "JOB" in call:
        names["JOB"] = client.start(["echo", "hi"])
        client.wait(names["JOB"])
    try:
        eval(f"client.{call}", names)  # the feature's own words
    except Exception as exc:  # what it raised, checked by the Then step
        scenario.notes["raised"] = exc
    else:
        scenario.notes["raised"] = None


@when(parsers.parse("the program lists the jobs {size:d} to a page"))
def _lists(scenario: Scenario, size: int) -> None:
    scenario.notes["listed"] = list(_client(scenario).list(page_size=size))


@when(parsers.parse('the program starts "{command}" and reads its output in a thread'))
def _reads_in_thread(scenario: Scenario, command: str) -> None:
    client = _client(scenario)
    scenario.job = client.start(shlex.split(command))
    reader = client.output(scenario.job)
    chunks: list[OutputChunk] = []
    done = threading.Event()

    def read() -> None:
        try:
            chunks.extend(reader)
        except JobmgrError as exc:  # what ended it, checked by a Then step
            scenario.notes["raised"] = exc
        finally:
            done.set()

    threading.Thread(target=read, daemon=True).start()
    scenario.notes.update(reader=reader, chunks=chunks, done=done)


@when("the server is killed with SIGKILL")
def _server_killed(scenario: Scenario) -> None:
    scenario.notes["port"] = scenario.program.port
    scenario.program.kill9()  # the launcher and the job live on


@when("the server is started again on the same port")
def _server_restarted(scenario: Scenario) -> None:
    server = scenario.program
    server.argv += ["--port", str(scenario.notes["port"])]  # the last --port wins
    server.start()


@when(parsers.parse('the program has read "{text}"'))
def _has_read(scenario: Scenario, text: str) -> None:
    chunks: list[OutputChunk] = scenario.notes["chunks"]
    eventually(lambda: text.encode() in b"".join(c.data for c in list(chunks)), 30, text)


@when(
    parsers.parse(
        'an asyncio program with an AsyncClient for it runs "{command}" and lists the jobs'
    )
)
def _async_program(scenario: Scenario, command: str) -> None:
    server, admin = scenario.program, scenario.program.pki.client("admin")

    async def program() -> tuple[int, list[JobStatus]]:
        async with AsyncClient(
            f"localhost:{server.port}", server.pki.ca_path, admin.cert_path, admin.key_path
        ) as jobs:
            code = await jobs.run(shlex.split(command), stdout=io.BytesIO(), stderr=io.BytesIO())
            return code, [job async for job in jobs.list()]

    scenario.notes["async"] = asyncio.run(program())


@when(parsers.parse("a fresh Python imports {first} and then {second}"))
def _fresh_python(scenario: Scenario, first: str, second: str) -> None:
    code = (
        f"import os, json, {first}, {second}, jobmgr.client as c; "
        "print(json.dumps([os.environ.get('GRPC_SSL_CIPHER_SUITES'), c.tls13_floor_active()]))"
    )
    env = {k: v for k, v in program_env().items() if k != "GRPC_SSL_CIPHER_SUITES"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, timeout=60, check=True
    )
    scenario.notes["fresh"] = json.loads(done.stdout)


# ---- then -------------------------------------------------------------------------------------


@then(parsers.parse("run returned {code:d}"))
def _returned(scenario: Scenario, code: int) -> None:
    done = scenario.notes["ran"]
    assert done.returncode == code, done


@then(
    parsers.parse(
        'the job\'s stdout came to the program\'s stdout as "{out}" and its stderr as "{err}"'
    )
)
def _came(scenario: Scenario, out: str, err: str) -> None:
    done = scenario.notes["ran"]
    assert (done.stdout, done.stderr) == (unescape(out).encode(), unescape(err).encode())


@then("the status is a JobStatus with state EXITED, exit_code 5, exit_status 5 and aware datetimes")
def _typed_status(scenario: Scenario) -> None:
    status: JobStatus = scenario.notes["status"]
    assert isinstance(status, JobStatus) and status.id == scenario.job
    assert (status.state, status.exit_code, status.exit_status) == (JobState.EXITED, 5, 5)
    assert isinstance(status.started_at, datetime) and status.started_at.tzinfo is not None
    assert status.ended_at is not None and status.ended_at >= status.started_at
    assert status == _client(scenario).status(scenario.job[:8])  # the same, by a prefix


@then("a job killed by SIGKILL has exit_code None, signal 9 and exit_status 137")
def _killed_status(scenario: Scenario) -> None:
    client = _client(scenario)
    status = client.wait(client.start(["sh", "-c", "kill -9 $$"]))
    assert (status.state, status.exit_code, status.signal, status.exit_status) == (
        JobState.FAILED, None, 9, 137,
    )  # fmt: skip


@then(parsers.parse("it raises {error} with the server's message"))
def _raises(scenario: Scenario, error: str) -> None:
    raised = scenario.notes["raised"]
    assert type(raised).__name__ == error, repr(raised)
    assert isinstance(raised, JobmgrError) and raised.message and raised.code, repr(raised)


@then(parsers.parse('it raises {error} with "{text}"'))
def _raises_with(scenario: Scenario, error: str, text: str) -> None:
    raised = scenario.notes["raised"]
    assert type(raised).__name__ == error and text in str(raised), repr(raised)


@then(parsers.parse("it gets the {count:d} jobs, oldest first"))
def _got_jobs(scenario: Scenario, count: int) -> None:
    listed: list[JobStatus] = scenario.notes["listed"]
    assert [job.id for job in listed] == scenario.notes["ids"] and len(listed) == count


@then("the first 8 characters of each job's id resolve to that job")
def _prefixes_resolve(scenario: Scenario) -> None:
    ids: list[str] = scenario.notes["ids"]
    for job_id in ids:
        if sum(other.startswith(job_id[:8]) for other in ids) == 1:
            assert _client(scenario).resolve(job_id[:8]) == job_id


@then("a 1-character prefix that two jobs share raises AmbiguousJobId naming both")
def _ambiguous(scenario: Scenario) -> None:
    ids: list[str] = scenario.notes["ids"]
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    with pytest.raises(AmbiguousJobId) as raised:
        _client(scenario).status(shared)
    sharing = sorted(i for i in ids if i.startswith(shared))
    assert list(raised.value.candidates) == sharing[: len(raised.value.candidates)]
    assert len(raised.value.candidates) >= 2


@then(
    parsers.parse(
        'the program\'s reader ends within {seconds:d} seconds with lines "line {first:d}" to '
        '"line {last:d}"'
    )
)
def _reader_ends(scenario: Scenario, seconds: int, first: int, last: int) -> None:
    assert scenario.notes["done"].wait(seconds), "the reader did not end"
    got = b"".join(c.data for c in scenario.notes["chunks"]).decode()
    assert got == "".join(f"line {i}\n" for i in range(first, last + 1)), got[-300:]


@then(
    parsers.parse(
        'the program\'s reader raises {error} within {seconds:d} seconds, with "{text}"'
    )
)
def _reader_raises(scenario: Scenario, error: str, seconds: int, text: str) -> None:
    assert scenario.notes["done"].wait(seconds), "the reader did not end"
    raised = scenario.notes.get("raised")
    assert type(raised).__name__ == error, repr(raised)
    assert text in str(raised), str(raised)


@then(parsers.parse("the program's Client finds the job {state} within {seconds:d} seconds"))
def _client_finds(scenario: Scenario, state: str, seconds: int) -> None:
    def found() -> bool:
        try:
            return _client(scenario).status(scenario.job).state is JobState[state]
        except JobmgrError:
            return False

    eventually(found, seconds, f"the job {state}")


@then("each chunk's offset is the number of bytes before it")
def _offsets(scenario: Scenario) -> None:
    chunks: list[OutputChunk] = scenario.notes["chunks"]
    before = 0
    for chunk in chunks:
        assert chunk.offset == before, (chunk.offset, before)
        before += len(chunk.data)
    assert scenario.notes["reader"].offset == before


@then(parsers.parse("the reader's final status is EXITED with code {code:d}"))
def _final_status(scenario: Scenario, code: int) -> None:
    status: JobStatus = scenario.notes["reader"].status
    assert (status.state, status.exit_code) == (JobState.EXITED, code), status


@then('output from offset 6 gives "o\\n" of stderr at 6, then "three\\n" of stdout at 8')
def _from_offset(scenario: Scenario) -> None:
    chunks = list(_client(scenario).output(scenario.job, offset=6))
    assert [(c.stream, c.data, c.offset) for c in chunks] == [
        (Stream.STDERR, b"o\n", 6),
        (Stream.STDOUT, b"three\n", 8),
    ]


@then('output with tail 1 gives "three\\n" and leaves the reader at offset 14')
def _tail(scenario: Scenario) -> None:
    reader = _client(scenario).output(scenario.job, tail=1)
    assert [(c.data, c.offset) for c in reader] == [(b"three\n", 8)]
    assert reader.offset == 14


@then("run returned 6 and the list holds that job, EXITED")
def _async_result(scenario: Scenario) -> None:
    code, jobs = scenario.notes["async"]
    assert code == 6
    assert [job.state for job in jobs] == [JobState.EXITED], jobs


@then(parsers.parse("GRPC_SSL_CIPHER_SUITES is set and tls13_floor_active() is true"))
def _floor_set(scenario: Scenario) -> None:
    suites, active = scenario.notes["fresh"]
    assert suites and active is True, scenario.notes["fresh"]


@then(parsers.parse("GRPC_SSL_CIPHER_SUITES is not set and tls13_floor_active() is false"))
def _floor_not_set(scenario: Scenario) -> None:
    assert scenario.notes["fresh"] == [None, False], scenario.notes["fresh"]


# ---- capture times ----------------------------------------------------------------------------


@when(
    parsers.parse('the program notes the time, starts "{command}" and waits for it'),
)
def _noted_starts_and_waits(scenario: Scenario, command: str) -> None:
    scenario.notes["noted"] = datetime.now(UTC)
    _starts_and_waits(scenario, command)


@then(
    parsers.parse(
        'output gives "{first}" and "{second}", each with an aware captured_at, at least a '
        "second apart, between the noted time and now"
    )
)
def _captured(scenario: Scenario, first: str, second: str) -> None:
    chunks = list(_client(scenario).output(scenario.job))
    assert [c.data for c in chunks] == [unescape(first).encode(), unescape(second).encode()]
    times = [c.captured_at for c in chunks]
    assert all(t is not None and t.tzinfo is not None for t in times), times
    one, two = times
    assert one is not None and two is not None
    assert scenario.notes["noted"] <= one and two <= datetime.now(UTC), times
    assert (two - one).total_seconds() >= 1, times  # the job slept 2 s between them
    scenario.notes["chunks"] = chunks


@then(parsers.parse('output since the second chunk\'s captured_at gives "{text}" alone'))
def _since_second(scenario: Scenario, text: str) -> None:
    second = scenario.notes["chunks"][1]
    reader = _client(scenario).output(scenario.job, since=second.captured_at)
    got = [(c.data, c.offset) for c in reader]
    assert got == [(unescape(text).encode(), second.offset)], got
