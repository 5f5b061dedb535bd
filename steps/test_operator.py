"""Steps for features/operator.feature: the real programs, a configuration file, gRPC probes."""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pytest_bdd import given, parsers, scenarios, then, when

from harness.client import Client
from harness.poll import eventually
from harness.programs import run_program
from harness.rpc import CallResult, call
from harness.server import ServerProgram
from jobmgr.api import job_pb2
from jobmgr.cli._units import parse_size

from ._cli_steps import ran, run_client
from ._phrases import KIND
from .fixtures_scenario import Scenario

scenarios("operator.feature")


# ---- jobs -------------------------------------------------------------------------------------


@when(
    parsers.re(
        f"the {KIND}, with (?P<variable>[A-Z_]+=\\S*) in its environment, runs jobmgr-client "
        "(?P<arguments>.+)"
    )
)
def _runs_with_env(scenario: Scenario, kind: str, variable: str, arguments: str) -> None:
    name, _, value = variable.partition("=")
    run_client(scenario, kind, arguments, env={name: value})


@when(
    parsers.re(
        f"the {KIND} starts (?P<command>.+), plus an argument of the bytes "
        "(?P<hexdump>[0-9a-f ]+), with jobmgr-client start$"
    )
)
def _starts_with_bytes(scenario: Scenario, kind: str, command: str, hexdump: str) -> None:
    # subprocess passes a str argument as os.fsencode() of it: these very bytes.
    raw = os.fsdecode(bytes.fromhex(hexdump))
    args = [*scenario.server.client_args(kind), "start", "--", *shlex.split(command), raw]
    scenario.notes["ran"] = run_program("jobmgr-client", *args)


@then(
    parsers.re(
        r"the status of the job has argv_bytes (?P<words>.+) and the bytes "
        r"(?P<hexdump>[0-9a-f ]+)$"
    )
)
def _argv_bytes(scenario: Scenario, words: str, hexdump: str) -> None:
    status = scenario.server.status(scenario.job, "user")
    want = [word.encode() for word in re.findall(r'"([^"]*)"', words)]
    assert list(status.argv_bytes) == [*want, bytes.fromhex(hexdump)], status.argv_bytes


@when(parsers.parse('the admin starts {count:d} jobs of "{command}" over gRPC'))
def _admin_starts_many(scenario: Scenario, count: int, command: str) -> None:
    scenario.notes["started"] = [scenario.server.start_job([command]) for _ in range(count)]


@then(
    parsers.parse(
        "the user's List, {size:d} jobs at a time, gives pages of {sizes} jobs, oldest first"
    )
)
def _pages(scenario: Scenario, size: int, sizes: str) -> None:
    pages: list[list[job_pb2.StatusResponse]] = []
    stub = scenario.server.stub("user")
    request = job_pb2.ListRequest(page_size=size)
    while True:
        reply = stub.List(request, timeout=10)
        pages.append(list(reply.jobs))
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    wanted = [int(n) for n in re.findall(r"\d+", sizes)]
    assert [len(jobs) for jobs in pages] == wanted, pages
    listed = [job for jobs in pages for job in jobs]
    assert [job.uuid for job in listed] == scenario.notes["started"]  # each once, oldest first
    stamps = [(job.started_at.ToNanoseconds(), job.uuid) for job in listed]
    assert stamps == sorted(stamps)


@then(parsers.parse('a List with the page token "{token}" fails with {code} naming "{field_name}"'))
def _bad_token(scenario: Scenario, token: str, code: str, field_name: str) -> None:
    result = call(scenario.server.stub("user").List, job_pb2.ListRequest(page_token=token))
    assert result.code is getattr(grpc.StatusCode, code), result
    assert field_name in result.details, result.details


@then(parsers.re(r"its stdout lists (?P<count>\d+) jobs?$"))
def _lists_jobs(scenario: Scenario, count: str) -> None:
    header, *rows = ran(scenario).stdout.decode().splitlines()
    assert header.split() == ["ID", "STATE", "EXIT", "OWNER", "STARTED", "COMMAND"], header
    assert len(rows) == int(count), rows


@then(
    parsers.parse(
        'the JSON lists 1 job: state "{state}", exit_code {code:d}, owner the {kind} '
        'certificate\'s Subject, command "{command}"'
    )
)
def _json_lists(scenario: Scenario, state: str, code: int, kind: str, command: str) -> None:
    (job,) = json.loads(ran(scenario).stdout)
    owner = scenario.program.pki.client(kind).subject
    assert (job["state"], job["exit_code"], job["owner"]) == (state, code, owner), job
    assert job["argv"] == shlex.split(command), job


@then(parsers.re(r"its stdout lists exactly the variables (?P<names>.+)$"))
def _variables(scenario: Scenario, names: str) -> None:
    wanted = re.split(r", | and ", names)
    lines = ran(scenario).stdout.decode().splitlines()
    assert len(lines) == len(wanted), lines
    for want, line in zip(sorted(wanted), sorted(lines), strict=True):
        assert line == want if "=" in want else line.startswith(want + "="), (want, line)


# ---- configuration ----------------------------------------------------------------------------


@given("a configuration file:")
def _config_file(scenario: Scenario, tmp_path: Path, docstring: str) -> None:
    path = tmp_path / "jobmgr.toml"
    path.write_text(docstring)
    scenario.notes["config_file"] = path


@when(parsers.parse("jobmgr-server {arguments} is run"))
def _server_run(scenario: Scenario, arguments: str) -> None:
    config_file = str(scenario.notes["config_file"])
    args = [config_file if a == "FILE" else a for a in shlex.split(arguments)]
    scenario.notes["ran"] = run_program("jobmgr-server", *args)


@when("jobmgr-server --print-config is run with and without --config docs/jobmgr.example.toml")
def _print_example(scenario: Scenario) -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "jobmgr.example.toml"
    scenario.notes["printed"] = [
        run_program("jobmgr-server", *args, "--print-config")
        for args in ((), ("--config", str(example)))
    ]


@then("both print the same configuration")
def _same_printed(scenario: Scenario) -> None:
    plain, example = scenario.notes["printed"]
    assert plain.returncode == example.returncode == 0, (plain.stderr, example.stderr)
    assert plain.stdout == example.stdout


@then("the printed configuration says")
def _printed_config(scenario: Scenario, datatable: list[list[str]]) -> None:
    printed = tomllib.loads(ran(scenario).stdout.decode())
    header, *rows = datatable
    assert header == ["setting", "value"], header
    for setting, value in rows:
        found: Any = printed
        for key in setting.split("."):
            found = found[key]
        assert found == tomllib.loads(f"v = {value}")["v"], (setting, found, value)


# Flags of jobmgr-client -> the Limits field and how to read the value.
_LIMIT_FLAGS: dict[str, tuple[str, Callable[[str], float]]] = {
    "--cpu": ("cpu", float),
    "--memory": ("memory_bytes", parse_size),
    "--io-read": ("io_read_bps", parse_size),
    "--io-write": ("io_write_bps", parse_size),
    "--pids": ("pids", int),
}


@when(parsers.re(f'the {KIND} asks jobmgr-server to start "(?P<command>[^"]+)"(?P<limit>.*)$'))
def _asks_to_start(scenario: Scenario, kind: str, command: str, limit: str) -> None:
    argv = shlex.split(command)
    request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
    if limit:
        flag, value = limit.removeprefix(" with ").split()
        name, read = _LIMIT_FLAGS[flag]
        setattr(request.limits, name, read(value))
    scenario.result = call(scenario.server.stub(kind).Start, request)


# ---- health checking and reflection -----------------------------------------------------------


def _health(server: Client, kind: str | None, service: str) -> CallResult:
    channel = server.channel_without_certificate() if kind is None else server.channel(kind)
    stub = health_pb2_grpc.HealthStub(channel)
    return call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout=10)


@then(parsers.re(f'the {KIND}\'s health check of "(?P<service>[^"]*)" answers SERVING'))
def _serving(scenario: Scenario, kind: str, service: str) -> None:
    result = _health(scenario.server, kind, service)
    assert result.code == grpc.StatusCode.OK, result
    assert result.value.status == health_pb2.HealthCheckResponse.SERVING, result.value


@then(parsers.re(f"the {KIND} client's health check fails with (?P<code>[A-Z_]+)"))
def _health_refused(scenario: Scenario, kind: str, code: str) -> None:
    result = _health(scenario.server, kind, "")
    assert result.code == grpc.StatusCode[code], result


@then(parsers.parse("a health check without a client certificate fails with {code}"))
def _health_without_certificate(scenario: Scenario, code: str) -> None:
    result = _health(scenario.server, None, "")
    assert result.code == grpc.StatusCode[code], result


def _reflect(server: Client, kind: str, request: Any) -> Any:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel(kind))
    (reply,) = stub.ServerReflectionInfo(iter([request]), timeout=10)
    return reply


@then(
    parsers.re(
        f"reflection, asked by the {KIND}, lists the services (?P<names>.+)$",
    )
)
def _reflection_lists(scenario: Scenario, kind: str, names: str) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = _reflect(scenario.server, kind, request)
    listed = sorted(service.name for service in reply.list_services_response.service)
    assert listed == sorted(re.findall(r'"([^"]+)"', names)), listed


@then(parsers.re(r"reflection describes (?P<service>[\w.]+) with the methods (?P<methods>.+)$"))
def _reflection_describes(scenario: Scenario, service: str, methods: str) -> None:
    from google.protobuf import descriptor_pb2

    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
    reply = _reflect(scenario.server, "user", request)
    package, _, name = service.rpartition(".")
    found = []
    for blob in reply.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
        if proto.package == package:
            found += [m.name for s in proto.service if s.name == name for m in s.method]
    assert found == re.split(r", | and ", methods), found


# ---- logs -------------------------------------------------------------------------------------


def _log_entries(server: ServerProgram) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.stderr.splitlines() if line.startswith("{")]


@then(
    parsers.parse(
        'the server logged method "{method}", caller "{caller}", role "{role}", job JOB and '
        'code "{code}"'
    )
)
def _logged(scenario: Scenario, method: str, caller: str, role: str, code: str) -> None:
    wanted = {"method": method, "caller": caller, "role": role, "job": scenario.job, "code": code}

    def logged() -> bool:
        entries = _log_entries(scenario.program)
        return any(wanted.items() <= entry.items() for entry in entries)

    eventually(logged, 10, f"a log line with {wanted}")
    entry = next(e for e in _log_entries(scenario.program) if wanted.items() <= e.items())
    assert isinstance(entry["duration_ms"], float) and entry["msg"] == "rpc", entry


@then("no log line holds certificate or key material")
def _no_secrets(scenario: Scenario) -> None:
    server = scenario.program
    text = server.stderr
    assert "-----BEGIN" not in text and "PRIVATE" not in text, text
    key = server.pki.client("admin").key_pem.decode().splitlines()[1]
    assert key not in text


@then(parsers.parse("its stdout is one uid of the range {first:d}-{last:d}"))
def _own_uid(scenario: Scenario, first: int, last: int) -> None:
    uid = int(ran(scenario).stdout)
    assert first <= uid <= last, uid


@then(
    parsers.parse(
        "its stdout is \"0\", then root's mapping to one uid of the range {first:d}-{last:d}"
    )
)
def _root_mapped(scenario: Scenario, first: int, last: int) -> None:
    uid, inside, outside, count = ran(scenario).stdout.split()
    assert (uid, inside, count) == (b"0", b"0", b"1"), ran(scenario).stdout
    assert first <= int(outside) <= last, outside
