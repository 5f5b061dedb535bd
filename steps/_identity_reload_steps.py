"""Steps of features/hardening_identity.feature on SIGHUP: a new server certificate, CA,
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

from jobmgr import pki
from jobmgr.api import job_pb2, job_pb2_grpc

from ._hostile_server import LaunchServer
from ._hostile_steps import Hostile, Outcome, outcome
from ._identity_pki import (
    ca_dir,
    channel,
    client_pair,
    crl_of,
    issuer_of,
    reload,
    run_revoke,
    served_certificate,
    server_pair,
)
from .fixtures_pki import ScenarioPKI


def _config_path(hostile: Hostile) -> Path:
    path: Path = hostile.notes["config"]
    return path


def _write_config(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


# ---- reload -----------------------------------------------------------------------------------


@when(
    "the server's certificate and key files are replaced by a new pair and the server gets SIGHUP"
)
def _rotate_server_cert(hostile: Hostile, trusted_ca: trustme.CA) -> None:
    server = hostile.srv
    fresh = server_pair(issuer_of(trusted_ca))
    pki.write_file(server.pki.server.key_path, fresh.key_pem, mode=0o600)
    pki.write_file(server.pki.server.cert_path, fresh.cert_pem, mode=0o644)
    hostile.notes["fresh"] = fresh
    line = reload(server)
    assert "reloaded:" in line, line


@then("a new connection is handed the new server certificate")
def _new_cert_served(hostile: Hostile, tmp_path: Path) -> None:
    server, fresh = hostile.srv, hostile.notes["fresh"]
    admin = server.pki.client("admin")
    assert served_certificate(server.port, server.pki.ca_pem, admin, tmp_path) == fresh.cert
    with channel(server.target, server.pki.ca_pem, admin) as new:
        got = outcome(job_pb2_grpc.JobManagerStub(new).List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@then("a new connection is still handed the server certificate it started with")
def _old_cert_served(hostile: Hostile, tmp_path: Path) -> None:
    server = hostile.srv
    served = served_certificate(
        server.port, server.pki.ca_pem, server.pki.client("admin"), tmp_path
    )
    assert served.public_bytes(serialization.Encoding.PEM) == server.pki.server.cert_pem


def _roles_config(user_calls: str) -> str:
    calls = ", ".join(json.dumps(call.strip()) for call in user_calls.split(","))
    return f"[access.roles]\nuser = [{calls}]\n"


@given(
    parsers.parse(
        'the jobmgr-server program is running with a configuration file giving role user "{calls}"'
    )
)
def _with_roles(hostile: Hostile, launch_server: LaunchServer, tmp_path: Path, calls: str) -> None:
    path = tmp_path / "jobmgr.toml"
    _write_config(path, _roles_config(calls))
    hostile.notes["config"] = path
    hostile.server = launch_server("--config", str(path))


@when(
    parsers.parse(
        'the configuration file is changed to give role user "{calls}" and the server gets SIGHUP'
    )
)
def _change_roles(hostile: Hostile, calls: str) -> None:
    _write_config(_config_path(hostile), _roles_config(calls))
    hostile.notes["reloaded_at"] = time.monotonic()
    line = reload(hostile.srv)
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
def _with_run_as(hostile: Hostile, launch_server: LaunchServer, tmp_path: Path, users: str) -> None:
    path = tmp_path / "jobmgr.toml"
    _write_config(path, _run_as_config(users))
    hostile.notes["config"] = path
    hostile.server = launch_server("--config", str(path))


def _start_as(hostile: Hostile, user: str) -> Outcome:
    request = job_pb2.StartRequest(cmd="id", args=["-un"], run_as=user)
    return outcome(hostile.srv.stub().Start, request)


@given(parsers.parse('a Start asking to run as "{user}" fails with INVALID_ARGUMENT'))
def _start_as_refused(hostile: Hostile, user: str) -> None:
    got = _start_as(hostile, user)
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT and user in got.details, got


@when(
    parsers.parse('the configuration file is changed to allow "{users}" and the server gets SIGHUP')
)
def _change_run_as(hostile: Hostile, users: str) -> None:
    _write_config(_config_path(hostile), _run_as_config(users))
    line = reload(hostile.srv)
    assert "reloaded:" in line, line


@then(parsers.parse('a Start asking to run as "{user}" runs "id -un" and prints "{printed}"'))
def _start_as_works(hostile: Hostile, user: str, printed: str) -> None:
    got = _start_as(hostile, user)
    assert got.code == grpc.StatusCode.OK, got
    assert hostile.srv.output(got.value.uuid) == printed.encode() + b"\n"


@when(
    "the CA file is replaced by a new CA, with a server certificate it signed, and the server "
    "gets SIGHUP"
)
def _rotate_ca(hostile: Hostile) -> None:
    server = hostile.srv
    new_ca = pki.make_ca("jobmgr CA")  # the same name as before: only its key tells them apart
    fresh = server_pair(new_ca)
    pki.write_file(server.pki.ca_path, new_ca.cert_pem, mode=0o644)
    pki.write_file(server.pki.server.key_path, fresh.key_pem, mode=0o600)
    pki.write_file(server.pki.server.cert_path, fresh.cert_pem, mode=0o644)
    hostile.notes["new_ca"] = new_ca
    line = reload(server)
    assert "reloaded:" in line, line


@then(parsers.parse('a certificate "{subject}" of the new CA can list jobs'))
def _new_ca_client(hostile: Hostile, tmp_path: Path, subject: str) -> None:
    new_ca: pki.Issued = hostile.notes["new_ca"]
    pair = client_pair(new_ca, tmp_path / "identity", "new-ca-client", subject)
    with channel(hostile.srv.target, new_ca.cert_pem, pair) as new:
        got = outcome(job_pb2_grpc.JobManagerStub(new).List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@then("a new connection with the old user certificate fails at the handshake")
def _old_ca_refused(hostile: Hostile) -> None:
    new_ca: pki.Issued = hostile.notes["new_ca"]
    with channel(hostile.srv.target, new_ca.cert_pem, hostile.srv.pki.client("user")) as old:
        got = outcome(job_pb2_grpc.JobManagerStub(old).List, job_pb2.ListRequest(), timeout=10)
    assert got.code == grpc.StatusCode.UNAVAILABLE, got


@given(
    "the jobmgr-server program is running with a configuration file and a CRL that revokes nothing"
)
def _with_config_and_crl(
    hostile: Hostile,
    launch_server: LaunchServer,
    scenario_pki: ScenarioPKI,
    trusted_ca: trustme.CA,
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobmgr.toml"
    _write_config(path, '[access]\nuser_sees = "all"\n')
    hostile.notes["config"] = path
    directory = ca_dir(scenario_pki, trusted_ca)
    run_revoke(directory)
    hostile.notes["ca_dir"] = directory
    hostile.server = launch_server("--config", str(path), "--crl", str(directory / "crl.pem"))


@when(parsers.parse("{what} is put in place and the server gets SIGHUP"))
def _bad_reload(
    hostile: Hostile, trusted_ca: trustme.CA, untrusted_ca: trustme.CA, what: str
) -> None:
    server = hostile.srv
    if what == "a server certificate of another key":
        other = server_pair(issuer_of(trusted_ca))
        pki.write_file(server.pki.server.cert_path, other.cert_pem, mode=0o644)
    elif what == "a CRL signed by another CA, revoking the user":
        user = x509.load_pem_x509_certificate(server.pki.client("user").cert_pem)
        crl = crl_of(issuer_of(untrusted_ca), [user.serial_number])
        pki.write_file(hostile.notes["ca_dir"] / "crl.pem", crl, mode=0o644)
    elif what == "a configuration with an unknown role call":
        _write_config(_config_path(hostile), '[access.roles]\nuser = ["Launch"]\n')
    else:
        raise AssertionError(f"no such bad reload: {what}")
    hostile.notes["reload line"] = reload(server)


@then(parsers.parse('the server logged "{words}" saying "{why}"'))
def _logged_refused(hostile: Hostile, words: str, why: str) -> None:
    line = hostile.notes["reload line"]
    assert words in line and why in line, line
