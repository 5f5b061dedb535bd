"""Certificates for jobmgr: a CA, a server certificate and one client certificate per role.

ECDSA P-256 keys (cheap handshakes), random serials, SANs ``localhost``, ``127.0.0.1`` and
``::1`` (plus any extra names given), serverAuth-only EKU on the server certificate and
clientAuth-only on client certificates. A client's role is its Subject O; the server's O
(``jobmgr``) is deliberately not a role. Keys are written 0600 and never overwritten unless
asked.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 365
SERVER_ORGANIZATION = "jobmgr"
# Client certificates `jobmgr-certs` writes: file stem -> (Subject O = role, Subject CN).
CLIENTS = {
    "client_admin": ("admin", "client_admin"),
    "client_user": ("user", "client_user"),
}
FILE_STEMS = ("ca", "server", *CLIENTS)

Purpose = Literal["server", "client"]
_EKU = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def make_ca(common_name: str = "jobmgr CA", *, days: int = DEFAULT_DAYS) -> Issued:
    """A self-signed CA that may sign leaf certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SERVER_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return Issued(builder.sign(key, hashes.SHA256()), key)


def issue(
    ca: Issued,
    *,
    purpose: Purpose,
    common_name: str,
    organizations: Sequence[str] = (),
    hosts: Iterable[str] = (),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    days: int = DEFAULT_DAYS,
) -> Issued:
    """A leaf certificate signed by ``ca``, for a server or a client.

    ``organizations`` become Subject O attributes, in order (a client's role is its one O);
    ``hosts`` the DNS names and IP addresses in the SAN (a server's; none for a client).
    ``not_before``/``not_after`` override the validity (e.g. for an expired test certificate).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = _now()
    start = not_before or now - datetime.timedelta(minutes=5)
    end = not_after or now + datetime.timedelta(days=days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([_EKU[purpose]]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    names = _general_names(hosts)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def load(cert_path: str | Path, key_path: str | Path) -> Issued:
    """A certificate and key from PEM files (e.g. an existing CA to sign with)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected an ECDSA private key")
    return Issued(cert, key)


class ExistingFiles(FileExistsError):
    """Some of the files to write are already there."""


def write_bundle(
    out_dir: str | Path,
    *,
    force: bool = False,
    extra_hosts: Iterable[str] = (),
    days: int = DEFAULT_DAYS,
) -> list[Path]:
    """Write ca, server and client certificates and keys (``FILE_STEMS``) into ``out_dir``.

    Raises ExistingFiles, and writes nothing, if any of them exists, unless ``force``.
    Returns the paths written.
    """
    out = Path(out_dir)
    paths = [out / f"{stem}.{ext}" for stem in FILE_STEMS for ext in ("pem", "key")]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise ExistingFiles(", ".join(str(p) for p in existing))
    out.mkdir(parents=True, exist_ok=True)
    ca = make_ca(days=days)
    hosts = list(dict.fromkeys([*DEFAULT_HOSTS, *extra_hosts]))
    bundle = {
        "ca": ca,
        "server": issue(
            ca,
            purpose="server",
            common_name="jobmgr-server",
            organizations=[SERVER_ORGANIZATION],
            hosts=hosts,
            days=days,
        ),
    }
    for stem, (role, common_name) in CLIENTS.items():
        bundle[stem] = issue(
            ca,
            purpose="client",
            common_name=common_name,
            organizations=[role],
            days=days,
        )
    for stem, issued in bundle.items():
        write_file(out / f"{stem}.key", issued.key_pem, mode=0o600)
        write_file(out / f"{stem}.pem", issued.cert_pem, mode=0o644)
    return paths


def write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` (never wider, whatever
    the umask), replacing any file there."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _general_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
