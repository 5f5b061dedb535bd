"""Steps for features/hardening_identity.feature: identities and page tokens here; revocation
and reload in _identity_revocation_steps and _identity_reload_steps. All against the real
jobmgr-server program (see _hostile_server)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import grpc
import trustme
from pytest_bdd import given, parsers, scenarios, then, when

from jobmgr.api import job_pb2, job_pb2_grpc

from ._hostile_steps import *  # noqa: F403  # the shared steps
from ._hostile_steps import Hostile, Outcome, outcome
from ._identity_pki import (
    channel,
    client_pair,
    issuer_of,
)
from ._identity_reload_steps import *  # noqa: F403  # the reload steps
from ._identity_revocation_steps import *  # noqa: F403  # the revocation steps
from .fixtures_server import run_program

scenarios("hardening_identity.feature")

TICKING = "while :; do echo tick; sleep 0.1; done"


# ---- page tokens ------------------------------------------------------------------------------


@given(parsers.parse('the admin has started {count:d} jobs of "{command}"'))
def _started_jobs(hostile: Hostile, count: int, command: str) -> None:
    server = hostile.srv
    hostile.notes["started"] = [server.start_job(command.split()) for _ in range(count)]
    for job in hostile.notes["started"]:
        server.wait_ended(job)


def _forged_token(hostile: Hostile) -> str:
    """A position just after the first job, in the unsigned form tokens once had."""
    first = hostile.srv.status(hostile.notes["started"][0])
    after = first.started_at.ToNanoseconds() / 1e9 + 1e-4
    return base64.urlsafe_b64encode(json.dumps([after, ""]).encode()).decode()


@when(parsers.parse("the admin asks for a List page with {token}"))
def _list_with_token(hostile: Hostile, token: str) -> None:
    tokens = {
        'a page token of 200 000 "[" characters, base64-encoded': lambda: base64.urlsafe_b64encode(
            b"[" * 200_000
        ).decode(),
        "a page token forged, in the old unsigned form, to skip a job": lambda: _forged_token(
            hostile
        ),
    }
    request = job_pb2.ListRequest(page_token=tokens[token]())
    hostile.notes["result"] = outcome(hostile.srv.stub().List, request)


@then(parsers.parse('the List fails with INVALID_ARGUMENT saying "{says}"'))
def _list_invalid(hostile: Hostile, says: str) -> None:
    got: Outcome = hostile.notes["result"]
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT and says in got.details, got


@then(
    parsers.parse(
        "a List {size:d} jobs at a time still gives the {count:d} jobs, oldest first, "
        "with the tokens it hands out"
    )
)
def _pages_still(hostile: Hostile, size: int, count: int) -> None:
    stub = hostile.srv.stub()
    request = job_pb2.ListRequest(page_size=size)
    listed: list[str] = []
    while True:
        reply = stub.List(request, timeout=30)
        listed += [job.uuid for job in reply.jobs]
        if not reply.next_page_token:
            break
        assert len(reply.next_page_token) <= 256, reply.next_page_token
        request.page_token = reply.next_page_token
    assert listed == hostile.notes["started"] and len(listed) == count, listed


# ---- identity ---------------------------------------------------------------------------------


@given(
    parsers.parse(
        'a certificate "{subject}" has started a job that prints a line every 0.1 seconds'
    )
)
def _subject_started(
    hostile: Hostile, trusted_ca: trustme.CA, tmp_path: Path, subject: str
) -> None:
    server = hostile.srv
    pair = client_pair(issuer_of(trusted_ca), tmp_path / "identity", "starter", subject)
    hostile.notes["starter"] = pair
    with channel(server.target, server.pki.ca_pem, pair) as starter:
        argv = server.marked(TICKING)
        request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
        hostile.job = job_pb2_grpc.JobManagerStub(starter).Start(request, timeout=30).uuid


@when(
    parsers.parse(
        'a certificate "{subject}" asks for that job\'s status and output, and lists jobs'
    )
)
def _subject_asks(hostile: Hostile, trusted_ca: trustme.CA, tmp_path: Path, subject: str) -> None:
    server = hostile.srv
    pair = client_pair(issuer_of(trusted_ca), tmp_path / "identity", "asker", subject)
    with channel(server.target, server.pki.ca_pem, pair) as asker:
        stub = job_pb2_grpc.JobManagerStub(asker)
        hostile.notes["asked"] = {
            "status": outcome(stub.Status, job_pb2.StatusRequest(uuid=hostile.job)),
            "output": outcome(stub.Output, job_pb2.OutputRequest(uuid=hostile.job, no_follow=True)),
            "list": outcome(stub.List, job_pb2.ListRequest()),
            "list by CN": outcome(stub.List, job_pb2.ListRequest(owner="alice")),
        }


@then("the status and the output are NOT_FOUND and the list is empty")
def _nothing_seen(hostile: Hostile) -> None:
    asked: dict[str, Outcome] = hostile.notes["asked"]
    for what in ("status", "output"):
        assert asked[what].code == grpc.StatusCode.NOT_FOUND, (what, asked[what])
    for what in ("list", "list by CN"):
        assert asked[what].code == grpc.StatusCode.OK, asked[what]
        assert list(asked[what].value.jobs) == [], (what, asked[what].value)


@then(parsers.parse('the job\'s owner reads "{owner}"'))
def _owner_reads(hostile: Hostile, owner: str) -> None:
    assert hostile.srv.status(hostile.job).owner == owner


@then(
    parsers.parse(
        '"jobmgr-client list --owner {name}", run with the certificate that started it, '
        "lists that job"
    )
)
def _cli_lists_by_cn(hostile: Hostile, name: str) -> None:
    server, pair = hostile.srv, hostile.notes["starter"]
    done = run_program(
        "jobmgr-client", "--host", "localhost", "--port", str(server.port),
        "--ca", str(server.pki.ca_path), "--cert", str(pair.cert_path),
        "--key", str(pair.key_path), "list", "--owner", name,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert hostile.job in done.stdout.decode(), done.stdout.decode()
