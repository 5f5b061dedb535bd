"""jobmgr-certs server and client against CAs that are not the starter set's: one made
elsewhere (an RSA key, its Subject Key Identifier by another method), one that is not a CA,
one about to expire; and the names a server certificate accepts. Chains are checked by
cryptography's RFC 5280 verifier, as a TLS peer would check them."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from jobmgr import pki
from jobmgr.cli import certs

NOW = datetime.datetime.now(datetime.UTC)


def foreign_ca(out: Path, *, days: int = 3650, is_ca: bool = True) -> Path:
    """An RSA CA as another tool makes it: its SKI is a truncated SHA-256 (RFC 7093), which
    no key identifier jobmgr computes from the key would match."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp Root")])
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ))  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier(digest.finalize()[:20]), critical=False)
        .sign(key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "ca.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return out


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_server_certificate_from_a_ca_made_elsewhere_verifies_for_each_of_its_names(
    tmp_path: Path,
) -> None:
    out = foreign_ca(tmp_path / "ca")
    argv = ["server", "--dir", str(out), "--name", "jobs1.example.org", "--san", "IP:10.0.0.5"]
    assert certs.main(argv) == 0
    leaf = load(out / "server-jobs1.example.org.pem")
    store = Store([load(out / "ca.pem")])
    for name in (
        x509.DNSName("jobs1.example.org"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.5")),
    ):
        verifier = PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(leaf, [])  # raises VerificationError unless it holds
        assert chain[-1] == load(out / "ca.pem")


def test_a_client_certificate_from_a_ca_made_elsewhere_names_the_ca_s_own_key_id(
    tmp_path: Path,
) -> None:
    out = foreign_ca(tmp_path / "ca")
    assert certs.main(["client", "--dir", str(out), "--name", "bob", "--role", "admin"]) == 0
    leaf, ca = load(out / "client-bob.pem"), load(out / "ca.pem")
    leaf.verify_directly_issued_by(ca)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest  # what OpenSSL matches to build the chain
    assert leaf.subject.rfc4514_string() == "CN=bob,O=admin"


def test_a_certificate_that_is_not_a_ca_issues_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = foreign_ca(tmp_path / "ca", is_ca=False)
    assert certs.main(["client", "--dir", str(out), "--name", "bob", "--role", "user"]) == 1
    assert "is not a CA certificate" in capsys.readouterr().err
    assert not (out / "client-bob.pem").exists() and not (out / "client-bob.key").exists()


def test_a_certificate_never_outlives_its_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = foreign_ca(tmp_path / "ca", days=30)
    assert certs.main(["client", "--dir", str(out), "--name", "bob", "--role", "user"]) == 0
    assert "valid only until the CA" in capsys.readouterr().out
    assert (
        load(out / "client-bob.pem").not_valid_after_utc <= load(out / "ca.pem").not_valid_after_utc
    )


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("jobs1.example.org", x509.DNSName("jobs1.example.org")),
        ("DNS:Jobs1.Example.ORG", x509.DNSName("jobs1.example.org")),
        ("*.example.org", x509.DNSName("*.example.org")),
        ("10.0.0.5", x509.IPAddress(ipaddress.ip_address("10.0.0.5"))),
        ("IP:::1", x509.IPAddress(ipaddress.ip_address("::1"))),
        ("localhost", x509.DNSName("localhost")),
    ],
)
def test_a_host_name_becomes_its_san_entry(text: str, entry: x509.GeneralName) -> None:
    assert pki.host_name(text) == entry


@pytest.mark.parametrize(
    "text", ["", "jobs 1", "a..b", "-a.example", "127.1", "IP:jobs1", "jöbs.example", "a" * 64]
)
def test_a_name_no_tls_client_would_match_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"DNS name|IP address|IDNA"):
        pki.host_name(text)
