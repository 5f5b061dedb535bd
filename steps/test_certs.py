"""Steps for features/certs.feature: the real jobmgr-certs, and real jobmgr-server and
jobmgr-client programs using what it wrote.

The operator works in ``tmp_path/op`` (``tmp_path/certs`` is the scenario's own PKI); paths
in the feature ("certs/ca.pem") are relative to it, as they would be in a shell.
"""

from __future__ import annotations

import shlex
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pytest_bdd import given, parsers, scenarios, then, when

from harness.pki import ServerFiles
from harness.programs import program, program_env
from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from ._cli_steps import ran
from .fixtures_scenario import Scenario
from .fixtures_server import LaunchServer

scenarios("certs.feature")

CALL_TIMEOUT = 20.0
EKU = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The operator's current directory."""
    directory = tmp_path / "op"
    directory.mkdir()
    return directory


def run_certs(
    workdir: Path, arguments: str, *, umask: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    """jobmgr-certs ARGUMENTS in ``workdir``, under ``umask`` if given (set by a shell that
    then execs the program: no Python runs between fork and exec)."""
    argv = [*program("jobmgr-certs"), *shlex.split(arguments)]
    if umask is not None:
        argv = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *argv]
    return subprocess.run(
        argv, capture_output=True, cwd=workdir, env=program_env(), timeout=60, check=False
    )


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``directory``: its bytes and mode."""
    if not directory.exists():
        return {}
    return {
        path.name: (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        for path in sorted(directory.iterdir())
    }


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def names_in(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses in a certificate's SAN, in its order."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans]


# ---- given ------------------------------------------------------------------------------------


@given(parsers.parse("the operator has run jobmgr-certs {arguments}"))
def _has_run(workdir: Path, arguments: str) -> None:
    done = run_certs(workdir, arguments)
    assert done.returncode == 0, done.stderr.decode()


@given(parsers.parse("jobmgr-server listens on {host} with {ca}, {cert} and {key}"))
def _server_listens(
    launch_server: LaunchServer,
    scenario: Scenario,
    workdir: Path,
    host: str,
    ca: str,
    cert: str,
    key: str,
) -> None:
    files = ServerFiles(workdir / ca, workdir / cert, workdir / key)
    scenario.server = launch_server("--host", host, files=files)
    scenario.notes["server_host"] = host


# ---- when -------------------------------------------------------------------------------------


@when(parsers.re(r"the operator runs jobmgr-certs (?P<arguments>.+?)(?P<umask> with umask 000)?$"))
def _runs(scenario: Scenario, workdir: Path, arguments: str, umask: str | None) -> None:
    scenario.notes["before"] = snapshot(workdir / "certs")
    scenario.notes["ran"] = run_certs(workdir, arguments, umask=0 if umask else None)


@when(
    parsers.re(
        r"(?P<who>alice|the operator) runs jobmgr-client (?P<arguments>.+) with "
        r"(?P<cert>\S+)\.pem$"
    )
)
def _client_runs(scenario: Scenario, workdir: Path, who: str, arguments: str, cert: str) -> None:
    flags = [
        "--port", str(scenario.program.port), "--ca", "certs/ca.pem",
        "--cert", f"{cert}.pem", "--key", f"{cert}.key",
    ]  # fmt: skip
    scenario.notes["ran"] = subprocess.run(
        [*program("jobmgr-client"), *flags, *shlex.split(arguments)],
        capture_output=True, cwd=workdir, env=program_env(), timeout=60, check=False,
    )  # fmt: skip


# ---- then -------------------------------------------------------------------------------------


@then(
    parsers.parse(
        "certs holds ca, server, client_admin and client_user, each a certificate and a key"
    )
)
def _starter_set(workdir: Path) -> None:
    names = sorted(path.name for path in (workdir / "certs").iterdir())
    stems = ("ca", "server", "client_admin", "client_user")
    assert names == sorted(f"{stem}.{ext}" for stem in stems for ext in ("pem", "key")), names


@then("every key in certs has mode 0600 and every certificate mode 0644")
def _modes(workdir: Path) -> None:
    modes = {name: mode for name, (_, mode) in snapshot(workdir / "certs").items()}
    assert modes, "no files"
    for name, mode in modes.items():
        assert mode == (0o600 if name.endswith(".key") else 0o644), (name, oct(mode))


@then("certs is writable by its owner only")
def _dir_mode(workdir: Path) -> None:
    mode = stat.S_IMODE((workdir / "certs").stat().st_mode)
    assert mode & 0o022 == 0, oct(mode)


@then("certs holds only ca.pem and ca.key")
def _ca_only(workdir: Path) -> None:
    assert sorted(path.name for path in (workdir / "certs").iterdir()) == ["ca.key", "ca.pem"]


@then(parsers.parse('{cert} is issued by {ca}, valid for exactly "{first}" and "{second}"'))
def _server_cert(workdir: Path, cert: str, ca: str, first: str, second: str) -> None:
    issued = _issued_by(workdir / cert, workdir / ca, "server")
    assert names_in(issued) == [first, second], names_in(issued)


@then(parsers.parse('{cert} is issued by {ca}, with Subject "{subject}"'))
def _client_cert(workdir: Path, cert: str, ca: str, subject: str) -> None:
    issued = _issued_by(workdir / cert, workdir / ca, "client")
    want = ",".join(reversed(subject.split(",")))  # RFC 4514 writes the last attribute first
    assert issued.subject.rfc4514_string() == want, issued.subject
    assert names_in(issued) == []


def _issued_by(cert_path: Path, ca_path: Path, purpose: str) -> x509.Certificate:
    cert = load_cert(cert_path)
    cert.verify_directly_issued_by(load_cert(ca_path))  # raises unless the CA signed it
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [EKU[purpose]], usage
    return cert


@then(parsers.parse("{key} has mode 0600"))
def _key_mode(workdir: Path, key: str) -> None:
    assert stat.S_IMODE((workdir / key).stat().st_mode) == 0o600


@then(parsers.parse('a gRPC client that dials {address} as "{name}" is answered'))
def _answered(scenario: Scenario, workdir: Path, address: str, name: str) -> None:
    reply = _list_as(scenario, workdir, address, name)
    assert isinstance(reply, job_pb2.ListResponse), reply


@then(parsers.parse('a gRPC client that dials {address} as "{name}" is refused at the handshake'))
def _refused(scenario: Scenario, workdir: Path, address: str, name: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _list_as(scenario, workdir, address, name)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value


def _list_as(scenario: Scenario, workdir: Path, address: str, name: str) -> job_pb2.ListResponse:
    """List over a channel to ``address`` that checks the server's certificate for ``name``,
    as a client that resolved ``name`` to ``address`` would."""
    certs = workdir / "certs"
    credentials = channel_credentials(
        ca_pem=(certs / "ca.pem").read_bytes(),
        cert_pem=(certs / "client_admin.pem").read_bytes(),
        key_pem=(certs / "client_admin.key").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
    target = f"{address}:{scenario.program.port}"
    with grpc.secure_channel(target, credentials, options=options) as channel:
        stub = job_pb2_grpc.JobManagerStub(channel)
        reply: job_pb2.ListResponse = stub.List(job_pb2.ListRequest(), timeout=CALL_TIMEOUT)
        return reply


@then("no file in certs has changed")
def _unchanged(scenario: Scenario, workdir: Path) -> None:
    assert snapshot(workdir / "certs") == scenario.notes["before"]


@then("certs does not exist")
def _no_certs(workdir: Path) -> None:
    assert not (workdir / "certs").exists()


@then(parsers.parse('its stderr ends with one line containing "{text}"'))
def _usage_error(scenario: Scenario, text: str) -> None:
    stderr = ran(scenario).stderr.decode()
    assert stderr.startswith("usage: jobmgr-certs"), stderr
    assert "Traceback" not in stderr, stderr
    assert text in stderr.splitlines()[-1], stderr
