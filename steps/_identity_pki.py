"""What the identity scenarios make for themselves: client certificates with exact Subjects, a
CA key on disk for ``jobmgr-certs revoke``, CRLs, channels to a server with any of these, the
certificate a server hands a new connection, and SIGHUP reloads awaited in the server's log."""

from __future__ import annotations

# Before grpc: see fixtures_pki.
import jobmgr.api  # noqa: F401  # isort: skip

import os
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import trustme
from cryptography import x509

from jobmgr import pki
from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from ._grpc_steps import eventually
from ._hostile_server import CLIENT_OPTIONS, HostileServer
from .fixtures_pki import CertPair, ScenarioPKI, _as_issuer
from .fixtures_server import run_program

RELOAD_TIMEOUT = 15.0
RELOAD_WORDS = ("reloaded:", "reload refused")


def issuer_of(ca: trustme.CA) -> pki.Issued:
    """A trustme CA as a jobmgr.pki signer."""
    return _as_issuer(ca)


def client_pair(signer: pki.Issued, out: Path, stem: str, subject: str) -> CertPair:
    """A client certificate with exactly ``subject`` ("O=user, CN=alice"), in ``out``."""
    attributes = dict(part.strip().split("=", 1) for part in subject.split(","))
    issued = pki.issue(
        signer,
        purpose="client",
        common_name=attributes["CN"],
        organizations=[attributes["O"]] if "O" in attributes else [],
    )
    return write_pair(out, stem, issued)


def write_pair(out: Path, stem: str, issued: pki.Issued) -> CertPair:
    out.mkdir(exist_ok=True)
    cert_path, key_path = out / f"{stem}.pem", out / f"{stem}.key"
    pki.write_file(cert_path, issued.cert_pem, mode=0o644)
    pki.write_file(key_path, issued.key_pem, mode=0o600)
    return CertPair(issued.cert_pem, issued.key_pem, cert_path, key_path)


def server_pair(signer: pki.Issued) -> pki.Issued:
    return pki.issue(
        signer,
        purpose="server",
        common_name="jobmgr-server",
        organizations=[pki.SERVER_ORGANIZATION],
        hosts=pki.DEFAULT_HOSTS,
    )


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


def server_answers(port: int, ca_pem: bytes, pair: CertPair, tmp: Path) -> bytes:
    """What the server sends a TLS 1.3 client with ``pair`` that opens HTTP/2 by hand: its
    first frame header, or b"" if it ends the connection (or the handshake) instead."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    ca_file = tmp / "answers-ca.pem"
    ca_file.write_bytes(ca_pem)
    context.load_verify_locations(cafile=str(ca_file))
    context.load_cert_chain(str(pair.cert_path), str(pair.key_path))
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("localhost", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            )
            return tls.recv(9)
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return b""


def reload(server: HostileServer) -> str:
    """SIGHUP the server and wait for its log to say how the reload went; that line."""
    before = _reload_lines(server)
    os.kill(server.pid, signal.SIGHUP)
    eventually(
        lambda: not server.running or len(_reload_lines(server)) > len(before),
        RELOAD_TIMEOUT,
        "the server to log how the reload went",
    )
    server.assert_up()  # SIGHUP's default action is to end the process
    return _reload_lines(server)[-1]


def _reload_lines(server: HostileServer) -> list[str]:
    return [
        line for line in server.stderr.splitlines() if any(word in line for word in RELOAD_WORDS)
    ]


@dataclass
class Follower:
    """One Output stream read in a thread: the lines it got, when, and how it ended."""

    call: grpc.Future
    lines: list[tuple[float, bytes]] = field(default_factory=list)
    code: grpc.StatusCode | None = None
    details: str = ""
    ended_at: float = 0.0
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, stub: job_pb2_grpc.JobManagerStub, job_id: str) -> Follower:
        call = stub.Output(job_pb2.OutputRequest(uuid=job_id), timeout=120)
        follower = cls(call)
        follower._thread = threading.Thread(target=follower._read, daemon=True)
        follower._thread.start()
        return follower

    def _read(self) -> None:
        pending = b""
        try:
            for message in self.call:
                pending += message.output
                *whole, pending = pending.split(b"\n")
                self.lines += [(time.monotonic(), line) for line in whole]
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""
        self.ended_at = time.monotonic()

    @property
    def ended(self) -> bool:
        return self.code is not None

    def counted(self) -> list[int]:
        return [int(line) for _, line in self.lines if line.isdigit()]

    def stop(self) -> None:
        self.call.cancel()
        if self._thread is not None:
            self._thread.join(10)
