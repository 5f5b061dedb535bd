"""Steps of features/hardening.feature on SIGHUP: a new server certificate, CA,
role table or run-as policy taken while jobs run and streams are open, and bad reloads that
change nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pytest_bdd import given, parsers, then, when

from harness.rpc import CallResult, call
from jobmgr import pki
from jobmgr.api import job_pb2, job_pb2_grpc

from ._identity_pki import (
    channel,
    client_pair,
    crl_of,
    reload,
    served_certificate,
)
from .fixtures_pki import issuer_of, server_pair
from .fixtures_scenario import Scenario
from .fixtures_server import LaunchServer


def _rewrite_config(scenario: Scenario, text: str) -> None:
    """Replace the text of the server's --config file."""
    path = scenario.program.config_path
    assert path is not None, "the server was started without a configuration file"
    path.write_text(text)
    path.chmod(0o644)


# ---- reload -----------------------------------------------------------------------------------


@when(
    "the server's certificate and key files are replaced by a new pair and the server gets SIGHUP"
)
def _rotate_server_cert(scenario: Scenario, trusted_ca: trustme.CA) -> None:
    server = scenario.program
    fresh = server_pair(issuer_of(trusted_ca))
    pki.write_file(server.pki.server.key_path, fresh.key_pem, mode=0o600)
    pki.write_file(server.pki.server.cert_path, fresh.cert_pem, mode=0o644)
    scenario.notes["fresh"] = fresh
    line = reload(server)
    assert "reloaded:" in line, line


@then("a new connection is handed the new server certificate")
def _new_cert_served(scenario: Scenario, tmp_path: Path) -> None:
    server, fresh = scenario.program, scenario.notes["fresh"]
    admin = server.pki.client("admin")
    assert served_certificate(server.port, server.pki.ca_pem, admin, tmp_path) == fresh.cert
    with channel(server.target, server.pki.ca_pem, admin) as new:
        got = call(job_pb2_grpc.JobManagerStub(new).List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@then("a new connection is still handed the server certificate it started with")
def _old_cert_served(scenario: Scenario, tmp_path: Path) -> None:
    server = scenario.program
    served = served_certificate(
        server.port, server.pki.ca_pem, server.pki.client("admin"), tmp_path
    )
    assert served.public_bytes(serialization.Encoding.PEM) == server.pki.server.cert_pem


def _roles_config(user_calls: str) -> str:
    calls = ", ".join(json.dumps(name.strip()) for name in user_calls.split(","))
    return f"[access.roles]\nuser = [{calls}]\n"


@given(
    parsers.parse(
        'the jobmgr-server program is running with a configuration file giving role user "{calls}"'
    )
)
def _with_roles(scenario: Scenario, launch_server: LaunchServer, calls: str) -> None:
    scenario.server = launch_server(config=_roles_config(calls))


@when(
    parsers.parse(
        'the configuration file is changed to give role user "{calls}" and the server gets SIGHUP'
    )
)
def _change_roles(scenario: Scenario, calls: str) -> None:
    _rewrite_config(scenario, _roles_config(calls))
    scenario.notes["reloaded_at"] = time.monotonic()
    line = reload(scenario.program)
    assert "reloaded:" in line, line


def _run_as_config(users: str) -> str:
    allowed = ", ".join(json.dumps(user.strip()) for user in users.split(","))
    return f'[jobs]\nrun_as = "nobody"\nallowed_run_as = [{allowed}]\n'


@given(
    parsers.parse(
        "the jobmgr-server program is running with a configuration file allowing jobs to run "
        'as "{users}"'
    )
)
def _with_run_as(scenario: Scenario, launch_server: LaunchServer, users: str) -> None:
    scenario.server = launch_server(config=_run_as_config(users))


def _start_as(scenario: Scenario, user: str) -> CallResult:
    request = job_pb2.StartRequest(cmd="id", args=["-un"], run_as=user)
    return call(scenario.program.stub().Start, request)


@given(parsers.parse('a Start asking to run as "{user}" fails with INVALID_ARGUMENT'))
def _start_as_refused(scenario: Scenario, user: str) -> None:
    got = _start_as(scenario, user)
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT and user in got.details, got


@when(
    parsers.parse('the configuration file is changed to allow "{users}" and the server gets SIGHUP')
)
def _change_run_as(scenario: Scenario, users: str) -> None:
    _rewrite_config(scenario, _run_as_config(users))
    line = reload(scenario.program)
    assert "reloaded:" in line, line


@then(parsers.parse('a Start asking to run as "{user}" runs "id -un" and prints "{printed}"'))
def _start_as_works(scenario: Scenario, user: str, printed: str) -> None:
    got = _start_as(scenario, user)
    assert got.code == grpc.StatusCode.OK, got
    assert scenario.program.output(got.value.uuid) == printed.encode() + b"\n"


@when(
    "the CA file is replaced by a new CA, with a server certificate it signed, and the server "
    "gets SIGHUP"
)
def _rotate_ca(scenario: Scenario) -> None:
    server = scenario.program
    new_ca = pki.make_ca("jobmgr CA")  # the same name as before: only its key tells them apart
    fresh = server_pair(new_ca)
    pki.write_file(server.pki.ca_path, new_ca.cert_pem, mode=0o644)
    pki.write_file(server.pki.server.key_path, fresh.key_pem, mode=0o600)
    pki.write_file(server.pki.server.cert_path, fresh.cert_pem, mode=0o644)
    scenario.notes["new_ca"] = new_ca
    line = reload(server)
    assert "reloaded:" in line, line


@then(parsers.parse('a certificate "{subject}" of the new CA can list jobs'))
def _new_ca_client(scenario: Scenario, tmp_path: Path, subject: str) -> None:
    new_ca: pki.Issued = scenario.notes["new_ca"]
    pair = client_pair(new_ca, tmp_path / "identity", "new-ca-client", subject)
    with channel(scenario.program.target, new_ca.cert_pem, pair) as new:
        got = call(job_pb2_grpc.JobManagerStub(new).List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@then("a new connection with the old user certificate fails at the handshake")
def _old_ca_refused(scenario: Scenario) -> None:
    new_ca: pki.Issued = scenario.notes["new_ca"]
    with channel(
        scenario.program.target, new_ca.cert_pem, scenario.program.pki.client("user")
    ) as old:
        got = call(job_pb2_grpc.JobManagerStub(old).List, job_pb2.ListRequest(), timeout=10)
    assert got.code == grpc.StatusCode.UNAVAILABLE, got


@when(parsers.parse("{what} is put in place and the server gets SIGHUP"))
def _bad_reload(
    scenario: Scenario, trusted_ca: trustme.CA, untrusted_ca: trustme.CA, what: str
) -> None:
    server = scenario.program
    if what == "a server certificate of another key":
        other = server_pair(issuer_of(trusted_ca))
        pki.write_file(server.pki.server.cert_path, other.cert_pem, mode=0o644)
    elif what == "a CRL signed by another CA, revoking the user":
        user = x509.load_pem_x509_certificate(server.pki.client("user").cert_pem)
        crl = crl_of(issuer_of(untrusted_ca), [user.serial_number])
        pki.write_file(scenario.notes["ca_dir"] / "crl.pem", crl, mode=0o644)
    elif what == "a configuration with an unknown role call":
        _rewrite_config(scenario, '[access.roles]\nuser = ["Launch"]\n')
    else:
        raise AssertionError(f"no such bad reload: {what}")
    scenario.notes["reload line"] = reload(server)


@then(parsers.parse('the server logged "{words}" saying "{why}"'))
def _logged_refused(scenario: Scenario, words: str, why: str) -> None:
    line = scenario.notes["reload line"]
    assert words in line and why in line, line
