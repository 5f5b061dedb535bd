"""Steps of features/hardening.feature about who a caller is (its whole Subject, and the
owner it gives the jobs it starts) and List's page tokens (signed by the server), against the
real jobmgr-server program. Revocation and reload are in _revocation_steps and
_reload_steps."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import grpc
import trustme
from pytest_bdd import given, parsers, then, when

from harness.programs import run_program
from harness.rpc import CallResult, call
from jobmgr.api import job_pb2, job_pb2_grpc

from ._identity_pki import channel, client_pair
from .fixtures_pki import issuer_of
from .fixtures_scenario import Scenario

TICKING = "while :; do echo tick; sleep 0.1; done"


# ---- page tokens ------------------------------------------------------------------------------


@given(parsers.parse('the admin has started {count:d} jobs of "{command}"'))
def _started_jobs(scenario: Scenario, count: int, command: str) -> None:
    server = scenario.program
    scenario.notes["started"] = [server.start_job(command.split()) for _ in range(count)]
    for job in scenario.notes["started"]:
        server.wait_ended(job)


def _forged_token(scenario: Scenario) -> str:
    """A position just after the first job, in the unsigned form tokens once had."""
    first = scenario.program.status(scenario.notes["started"][0])
    after = first.started_at.ToNanoseconds() / 1e9 + 1e-4
    return base64.urlsafe_b64encode(json.dumps([after, ""]).encode()).decode()


@when(parsers.parse("the admin asks for a List page with {token}"))
def _list_with_token(scenario: Scenario, token: str) -> None:
    tokens = {
        'a page token of 200 000 "[" characters, base64-encoded': lambda: base64.urlsafe_b64encode(
            b"[" * 200_000
        ).decode(),
        "a page token forged, in the old unsigned form, to skip a job": lambda: _forged_token(
            scenario
        ),
    }
    request = job_pb2.ListRequest(page_token=tokens[token]())
    scenario.notes["result"] = call(scenario.program.stub().List, request)


@then(parsers.parse('the List fails with INVALID_ARGUMENT saying "{says}"'))
def _list_invalid(scenario: Scenario, says: str) -> None:
    got: CallResult = scenario.notes["result"]
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT and says in got.details, got


@then(
    parsers.parse(
        "a List {size:d} jobs at a time still gives the {count:d} jobs, oldest first, "
        "with the tokens it hands out"
    )
)
def _pages_still(scenario: Scenario, size: int, count: int) -> None:
    stub = scenario.program.stub()
    request = job_pb2.ListRequest(page_size=size)
    listed: list[str] = []
    while True:
        reply = stub.List(request, timeout=30)
        listed += [job.uuid for job in reply.jobs]
        if not reply.next_page_token:
            break
        assert len(reply.next_page_token) <= 256, reply.next_page_token
        request.page_token = reply.next_page_token
    assert listed == scenario.notes["started"] and len(listed) == count, listed


# ---- identity ---------------------------------------------------------------------------------


@given(
    parsers.parse(
        'a certificate "{subject}" has started a job that prints a line every 0.1 seconds'
    )
)
def _subject_started(
    scenario: Scenario, trusted_ca: trustme.CA, tmp_path: Path, subject: str
) -> None:
    server = scenario.program
    pair = client_pair(issuer_of(trusted_ca), tmp_path / "identity", "starter", subject)
    scenario.notes["starter"] = pair
    with channel(server.target, server.pki.ca_pem, pair) as starter:
        argv = server.marked(TICKING)
        request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
        scenario.job = job_pb2_grpc.JobManagerStub(starter).Start(request, timeout=30).uuid


@when(
    parsers.parse(
        'a certificate "{subject}" asks for that job\'s status and output, and lists jobs'
    )
)
def _subject_asks(scenario: Scenario, trusted_ca: trustme.CA, tmp_path: Path, subject: str) -> None:
    server = scenario.program
    pair = client_pair(issuer_of(trusted_ca), tmp_path / "identity", "asker", subject)
    with channel(server.target, server.pki.ca_pem, pair) as asker:
        stub = job_pb2_grpc.JobManagerStub(asker)
        scenario.notes["asked"] = {
            "status": call(stub.Status, job_pb2.StatusRequest(uuid=scenario.job)),
            "output": call(stub.Output, job_pb2.OutputRequest(uuid=scenario.job, no_follow=True)),
            "list": call(stub.List, job_pb2.ListRequest()),
            "list by CN": call(stub.List, job_pb2.ListRequest(owner="alice")),
        }


@then("the status and the output are NOT_FOUND and the list is empty")
def _nothing_seen(scenario: Scenario) -> None:
    asked: dict[str, CallResult] = scenario.notes["asked"]
    for what in ("status", "output"):
        assert asked[what].code == grpc.StatusCode.NOT_FOUND, (what, asked[what])
    for what in ("list", "list by CN"):
        assert asked[what].code == grpc.StatusCode.OK, asked[what]
        assert list(asked[what].value.jobs) == [], (what, asked[what].value)


@then(parsers.parse('the job\'s owner reads "{owner}"'))
def _owner_reads(scenario: Scenario, owner: str) -> None:
    assert scenario.program.status(scenario.job).owner == owner


@then(
    parsers.parse(
        '"jobmgr-client list --owner {name}", run with the certificate that started it, '
        "lists that job"
    )
)
def _cli_lists_by_cn(scenario: Scenario, name: str) -> None:
    server, pair = scenario.program, scenario.notes["starter"]
    done = run_program(
        "jobmgr-client", "--host", "localhost", "--port", str(server.port),
        "--ca", str(server.pki.ca_path), "--cert", str(pair.cert_path),
        "--key", str(pair.key_path), "list", "--owner", name,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert scenario.job in done.stdout.decode(), done.stdout.decode()
