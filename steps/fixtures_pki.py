"""Certificates for the service scenarios: a trustme CA and one set of client certificates per
scenario, good and bad, written to files so the CLI can use them too."""

from __future__ import annotations

# Before anything imports grpc: importing jobmgr.api makes gRPC refuse TLS 1.2 in this test
# process, where the in-process servers run. The server fixtures check it took effect.
import jobmgr.api  # noqa: F401  # isort: skip

import datetime
from collections.abc import Sequence
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness.pki import CertPair as CertPair
from harness.pki import ScenarioPKI as ScenarioPKI
from jobmgr import pki


@pytest.fixture(scope="session")
def trusted_ca() -> trustme.CA:
    return trustme.CA(organization_name="jobmgr tests")


@pytest.fixture(scope="session")
def untrusted_ca() -> trustme.CA:
    return trustme.CA(organization_name="somebody else")


@pytest.fixture
def scenario_pki(tmp_path: Path, trusted_ca: trustme.CA, untrusted_ca: trustme.CA) -> ScenarioPKI:
    """Fresh certificates in ``tmp_path/certs``; the server's has serverAuth only."""
    out = tmp_path / "certs"
    out.mkdir()
    signer = issuer_of(trusted_ca)
    now = datetime.datetime.now(datetime.UTC)
    issued: dict[str, tuple[bytes, bytes]] = {
        "admin": _trustme_pair(trusted_ca, "admin", "client_admin"),
        "user": _trustme_pair(trusted_ca, "user", "client_user"),
        "unknown-O": _trustme_pair(trusted_ca, "intern", "client_intern"),
        "other-CA": _trustme_pair(untrusted_ca, "admin", "client_admin"),
        "expired": _trustme_pair(
            trusted_ca,
            "admin",
            "client_admin",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
        "no-O": _pki_pair(signer, purpose="client", common_name="client_anonymous"),
        "two-O": _pki_pair(
            signer, purpose="client", common_name="client_both", organizations=["admin", "user"]
        ),
    }
    made = server_pair(signer)
    server = made.cert_pem, made.key_pem
    issued["server-cert"] = server
    ca_path = out / "ca.pem"
    ca_path.write_bytes(trusted_ca.cert_pem.bytes())
    other_ca_path = out / "other-ca.pem"
    other_ca_path.write_bytes(untrusted_ca.cert_pem.bytes())
    return ScenarioPKI(
        ca_pem=trusted_ca.cert_pem.bytes(),
        ca_path=ca_path,
        other_ca_path=other_ca_path,
        server=write_pair(out, "server", *server),
        clients={kind: write_pair(out, kind, *pair) for kind, pair in issued.items()},
    )


def _trustme_pair(
    ca: trustme.CA,
    organization: str,
    common_name: str,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    leaf = ca.issue_cert(
        common_name=common_name,
        organization_name=organization,
        not_before=not_before,
        not_after=not_after,
    )
    return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()


def _pki_pair(
    signer: pki.Issued,
    *,
    purpose: pki.Purpose,
    common_name: str,
    organizations: Sequence[str] = (),
) -> tuple[bytes, bytes]:
    issued = pki.issue(
        signer, purpose=purpose, common_name=common_name, organizations=organizations
    )
    return issued.cert_pem, issued.key_pem


def issuer_of(ca: trustme.CA) -> pki.Issued:
    """trustme's CA as a jobmgr.pki signer, for certificates trustme cannot make."""
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return pki.Issued(x509.load_pem_x509_certificate(ca.cert_pem.bytes()), key)


def server_pair(signer: pki.Issued) -> pki.Issued:
    """A server certificate as jobmgr-certs makes one (serverAuth only, localhost)."""
    return pki.issue(
        signer,
        purpose="server",
        common_name="jobmgr-server",
        organizations=[pki.SERVER_ORGANIZATION],
        hosts=pki.DEFAULT_HOSTS,
    )


def write_pair(out: Path, stem: str, cert_pem: bytes, key_pem: bytes) -> CertPair:
    """The certificate (0644) and key (0600) as ``out/<stem>.pem`` and ``out/<stem>.key``."""
    out.mkdir(exist_ok=True)
    cert_path, key_path = out / f"{stem}.pem", out / f"{stem}.key"
    pki.write_file(cert_path, cert_pem, mode=0o644)
    pki.write_file(key_path, key_pem, mode=0o600)
    return CertPair(cert_pem, key_pem, cert_path, key_path)
