"""Certificates for jobmgr: a CA, a server certificate and one client certificate per role.

ECDSA P-256 keys (cheap handshakes), random serials, SANs ``localhost``, ``127.0.0.1`` and
``::1`` (plus any extra names given), serverAuth-only EKU on the server certificate and
clientAuth-only on client certificates. A client's role is its Subject O; the server's O
(``jobmgr``) is deliberately not a role. Keys are written 0600 and never overwritten unless
asked.

Revocation: ``revoke`` adds serial numbers to the CA's certificate revocation list (CRL),
keeping every entry already in it; the CRL is public (written 0644) and signed by the CA,
and jobmgr-server refuses one the CA did not sign.
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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
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


# Keys a CA may sign a CRL with.
_ISSUER_KEYS = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


class RevocationError(ValueError):
    """The CA, the CRL or a certificate to revoke is not what it should be; says which."""


@dataclass(frozen=True)
class Signer:
    """A CA certificate and its private key, of any type a CA may have (to sign a CRL with
    a CA made elsewhere, not only with one of ours)."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @classmethod
    def from_files(cls, cert_path: str | Path, key_path: str | Path) -> Signer:
        """RevocationError unless the files are a CA certificate and its private key."""
        try:
            cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        except ValueError:
            raise RevocationError(f"{cert_path} is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (ValueError, TypeError):
            raise RevocationError(f"{key_path} is not an unencrypted PEM private key") from None
        public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*public) != cert.public_key().public_bytes(*public):
            raise RevocationError(f"{key_path} is not the key of {cert_path}")
        if not isinstance(key, _ISSUER_KEYS):
            raise RevocationError(f"{key_path}: this kind of key cannot sign a CRL")
        return cls(cert, key)

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed ``cert`` (and ``cert`` is not the CA itself)."""
        if cert == self.cert:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def read_crl(path: str | Path, ca: Signer) -> x509.CertificateRevocationList | None:
    """The CRL at ``path`` (None if there is none yet); RevocationError unless ``ca``
    signed it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise RevocationError(f"{path} is not a PEM CRL") from None
    public = ca.cert.public_key()
    if crl.issuer != ca.cert.subject or not crl.is_signature_valid(public):  # type: ignore[arg-type]
        raise RevocationError(
            f"{path} is not signed by this CA ({ca.cert.subject.rfc4514_string()}): "
            "refusing to add to it (move it away to start a new list)"
        )
    return crl


def revoke(
    ca: Signer,
    previous: x509.CertificateRevocationList | None,
    serials: Iterable[int],
    *,
    reason: x509.ReasonFlags | None = None,
    days: int = DEFAULT_DAYS,
) -> x509.CertificateRevocationList:
    """A new CRL of ``ca``: every entry of ``previous`` (its dates and reasons kept) plus
    ``serials`` not in it yet, valid for ``days``, numbered one past ``previous``."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=days))
        .add_extension(x509.CRLNumber(_crl_number(previous) + 1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    known = set()
    for entry in previous or ():
        builder = builder.add_revoked_certificate(entry)
        known.add(entry.serial_number)
    for serial in dict.fromkeys(serials):
        if serial in known:
            continue
        entry_builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
        if reason is not None:
            entry_builder = entry_builder.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry_builder.build())
    digest = (
        None
        if isinstance(ca.key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    return builder.sign(ca.key, digest)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _crl_number(crl: x509.CertificateRevocationList | None) -> int:
    if crl is None:
        return 0
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


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
