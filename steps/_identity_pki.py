"""What the identity scenarios make for themselves: client certificates with exact Subjects, a
CA key on disk for ``jobmgr-certs revoke``, CRLs, channels to a server with any of these, the
certificate a server hands a new connection, and SIGHUP reloads awaited in the server's log."""

from __future__ import annotations

# Before grpc: importing jobmgr.api makes gRPC refuse TLS 1.2 in this process.
import jobmgr.api  # noqa: F401  # isort: skip

import signal
import socket
import ssl
from pathlib import Path

import grpc
import trustme
from cryptography import x509

from harness.client import CLIENT_OPTIONS
from harness.pki import CertPair, ScenarioPKI
from harness.poll import eventually
from harness.programs import run_program
from harness.server import ServerProgram
from jobmgr import pki
from jobmgr.api import channel_credentials

from .fixtures_pki import write_pair

RELOAD_TIMEOUT = 15.0
RELOAD_WORDS = ("reloaded:", "reload refused")


def client_pair(signer: pki.Issued, out: Path, stem: str, subject: str) -> CertPair:
    """A client certificate with exactly ``subject`` ("O=user, CN=alice"), in ``out``."""
    attributes = dict(part.strip().split("=", 1) for part in subject.split(","))
    issued = pki.issue(
        signer,
        purpose="client",
        common_name=attributes["CN"],
        organizations=[attributes["O"]] if "O" in attributes else [],
    )
    return write_pair(out, stem, issued.cert_pem, issued.key_pem)


def ca_dir(scenario_pki: ScenarioPKI, ca: trustme.CA) -> Path:
    """The scenario's certs directory with the CA's key beside ca.pem (0600), as
    ``jobmgr-certs revoke --dir`` wants it."""
    out = scenario_pki.ca_path.parent
    pki.write_file(out / "ca.key", ca.private_key_pem.bytes(), mode=0o600)
    return out


def run_revoke(directory: Path, *certificates: Path) -> str:
    """``jobmgr-certs revoke --dir DIRECTORY CERT...``; its stdout. Fails unless it exits 0."""
    done = run_program("jobmgr-certs", "revoke", "--dir", str(directory), *map(str, certificates))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (directory / "crl.pem").stat().st_mode & 0o777 == 0o644
    return done.stdout.decode()


def revoke_in_crl(scenario_pki: ScenarioPKI, ca: trustme.CA, *certificates: Path) -> Path:
    """``jobmgr-certs revoke`` of ``certificates`` (none: a CRL that revokes nothing) in the
    scenario's certs directory, the CA's key put beside it; that directory, holding crl.pem."""
    directory = ca_dir(scenario_pki, ca)
    said = run_revoke(directory, *certificates)
    assert not certificates or "revoked" in said, said
    return directory


def crl_of(signer: pki.Issued, serials: list[int]) -> bytes:
    """A CRL of ``signer`` revoking ``serials``."""
    return pki.crl_pem(pki.revoke(pki.Signer(signer.cert, signer.key), None, serials))


def channel(target: str, ca_pem: bytes, pair: CertPair) -> grpc.Channel:
    """A channel to ``target`` that trusts ``ca_pem`` and presents ``pair``; close it after."""
    credentials = channel_credentials(ca_pem=ca_pem, cert_pem=pair.cert_pem, key_pem=pair.key_pem)
    return grpc.secure_channel(target, credentials, options=CLIENT_OPTIONS)


def served_certificate(port: int, ca_pem: bytes, pair: CertPair, tmp: Path) -> x509.Certificate:
    """The certificate the server hands a new TLS 1.3 connection (made with Python's ssl)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    ca_file = tmp / "served-ca.pem"
    ca_file.write_bytes(ca_pem)
    context.load_verify_locations(cafile=str(ca_file))
    context.load_cert_chain(str(pair.cert_path), str(pair.key_path))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("localhost", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def reload(server: ServerProgram) -> str:
    """SIGHUP the server and wait for its log to say how the reload went; that line."""
    before = _reload_lines(server)
    server.send_signal(signal.SIGHUP)
    eventually(
        lambda: not server.running or len(_reload_lines(server)) > len(before),
        RELOAD_TIMEOUT,
        "the server to log how the reload went",
    )
    server.assert_up()  # SIGHUP's default action is to end the process
    return _reload_lines(server)[-1]


def _reload_lines(server: ServerProgram) -> list[str]:
    return [
        line for line in server.stderr.splitlines() if any(word in line for word in RELOAD_WORDS)
    ]
