"""Steps for the handshakes of features/security.feature: clients the server must refuse
before any call (old TLS versions, missing or unacceptable certificates), made by hand with
Python's ``ssl``, with ``openssl s_client`` and through gRPC."""

from __future__ import annotations

import datetime
import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from pytest_bdd import parsers, then, when

from harness.client import CLIENT_OPTIONS
from harness.figures import report
from harness.pki import CertPair, ScenarioPKI
from harness.poll import eventually
from harness.rpc import call
from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from ._h2 import ClientTLS, RawCall
from ._server_steps import mark_log, new_log
from .fixtures_scenario import Scenario

TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
# What an OpenSSL client says when it refuses on its own, before asking the server anything.
CLIENT_SIDE_REFUSALS = ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "NO_SUITABLE")
HANDSHAKE_FAILED = "Handshake failed"
CERTIFICATES = {
    "no certificate": None,
    "a certificate from another CA": "other-CA",
    "an expired certificate": "expired",
    "a certificate not valid yet": "not-yet-valid",
    "the server certificate (serverAuth only)": "server-cert",
}


# ---- certificates -----------------------------------------------------------------------------


@pytest.fixture
def future_pair(tmp_path: Path, trusted_ca: trustme.CA) -> CertPair:
    """An admin client certificate from the trusted CA that becomes valid tomorrow."""
    now = datetime.datetime.now(datetime.UTC)
    leaf = trusted_ca.issue_cert(
        common_name="client_future",
        organization_name="admin",
        not_before=now + datetime.timedelta(days=1),
        not_after=now + datetime.timedelta(days=30),
    )
    out = tmp_path / "future"
    out.mkdir()
    cert_path, key_path = out / "future.pem", out / "future.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert_path))
    leaf.private_key_pem.write_to_path(str(key_path))
    return CertPair(cert_path.read_bytes(), key_path.read_bytes(), cert_path, key_path)


def _pair(pki: ScenarioPKI, future: CertPair, certificate: str) -> CertPair | None:
    kind = CERTIFICATES[certificate]
    if kind is None:
        return None
    return future if kind == "not-yet-valid" else pki.client(kind)


@then(parsers.parse('the server logged the failed handshake saying "{reason}"'))
def _logged_handshake(scenario: Scenario, reason: str) -> None:
    def logged() -> bool:
        return any(
            HANDSHAKE_FAILED in line and reason in line for line in new_log(scenario).splitlines()
        )

    try:
        eventually(logged, 5.0, "the log line")
    except AssertionError:
        raise AssertionError(
            f"no '{HANDSHAKE_FAILED}' line with {reason!r} in the server's log:\n"
            f"{new_log(scenario)[-2000:]}"
        ) from None


# ---- handshakes -------------------------------------------------------------------------------


@when(parsers.parse("a client offering only TLS {version} connects with the admin certificate"))
def _old_tls(scenario: Scenario, version: str) -> None:
    server = scenario.program
    pair = server.pki.client("admin")
    tls = ClientTLS(
        server.pki.ca_path, pair.cert_path, pair.key_path,
        TLS_VERSIONS[version], TLS_VERSIONS[version],
    )  # fmt: skip
    mark_log(scenario)
    scenario.notes["handshake"] = start_by_hand(server.port, tls, server.marked("sleep 30"))


def start_by_hand(port: int, tls: ClientTLS, argv: list[str]) -> dict[str, Any]:
    """Handshake, send a Start for ``argv`` by hand, and see what the server sends back."""
    seen: dict[str, Any] = {"version": None, "error": "", "frame": None}
    try:
        call = RawCall(port, tls)
    except (ssl.SSLError, OSError) as exc:
        seen["error"] = f"{type(exc).__name__}: {exc}"
        return seen
    seen["version"] = call.version
    try:
        request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
        call.send_call("/job.JobManager/Start", request.SerializeToString())
        seen["frame"] = call.first_frame()
    except (ssl.SSLError, OSError) as exc:
        seen["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        call.close()
    return seen


@then("the handshake fails, and it was the server that refused it")
def _refused_by_server(scenario: Scenario) -> None:
    seen = scenario.notes["handshake"]
    assert seen["version"] is None and seen["error"], f"the handshake succeeded: {seen}"
    assert not any(word in seen["error"] for word in CLIENT_SIDE_REFUSALS), (
        f"this client refused on its own, the server was never asked: {seen['error']}"
    )
    eventually(lambda: HANDSHAKE_FAILED in new_log(scenario), 5.0, "the server to see it")


@when("openssl s_client connects with each of -tls1, -tls1_1, -tls1_2 and -tls1_3")
def _s_client(scenario: Scenario) -> None:
    server = scenario.program
    pair = server.pki.client("admin")
    sessions = {}
    for flag in ("-tls1", "-tls1_1", "-tls1_2", "-tls1_3"):
        argv = [
            "openssl", "s_client", "-connect", f"localhost:{server.port}", flag,
            "-cipher", "ALL:@SECLEVEL=0", "-alpn", "h2", "-CAfile", str(server.pki.ca_path),
            "-cert", str(pair.cert_path), "-key", str(pair.key_path),
        ]  # fmt: skip
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=False
        )
        text = done.stdout.decode(errors="replace")
        match = re.search(r"^New, (\S+), Cipher is (\S+)", text, re.MULTILINE)
        got = match.group(1) if match and match.group(2) != "(NONE)" else None
        sessions[flag] = got
    scenario.notes["sessions"] = sessions
    report(f"openssl s_client sessions by version flag: {sessions}")


@then("only the -tls1_3 connection gets a session")
def _only_tls13(scenario: Scenario) -> None:
    sessions = scenario.notes["sessions"]
    assert sessions == {"-tls1": None, "-tls1_1": None, "-tls1_2": None, "-tls1_3": "TLSv1.3"}, (
        sessions
    )


@when(parsers.parse("a TLS 1.3 client with {certificate} sends a Start call by hand"))
def _bad_cert_raw(scenario: Scenario, certificate: str, future_pair: CertPair) -> None:
    server = scenario.program
    pair = _pair(server.pki, future_pair, certificate)
    tls = ClientTLS(
        server.pki.ca_path, pair.cert_path if pair else None, pair.key_path if pair else None
    )
    mark_log(scenario)
    scenario.notes["handshake"] = start_by_hand(server.port, tls, server.marked("sleep 30"))


@then("the server ends the connection without sending a single HTTP/2 frame")
def _no_frame(scenario: Scenario) -> None:
    seen = scenario.notes["handshake"]
    assert seen["frame"] is None, f"the server answered with an HTTP/2 frame: {seen}"


@then(parsers.parse("a gRPC client with {certificate} gets UNAVAILABLE from Start"))
def _grpc_unavailable(scenario: Scenario, certificate: str, future_pair: CertPair) -> None:
    server = scenario.program
    pair = _pair(server.pki, future_pair, certificate)
    if pair is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=server.pki.ca_pem)
    else:
        credentials = channel_credentials(
            ca_pem=server.pki.ca_pem, cert_pem=pair.cert_pem, key_pem=pair.key_pem
        )
    with grpc.secure_channel(server.target, credentials, options=CLIENT_OPTIONS) as channel:
        argv = server.marked("sleep 30")
        request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
        got = call(job_pb2_grpc.JobManagerStub(channel).Start, request, timeout=10)
    assert got.code == grpc.StatusCode.UNAVAILABLE, got
