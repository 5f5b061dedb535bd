"""Certificates: a CA, and the leaf certificates it issues to servers and clients."""

from __future__ import annotations

import datetime
import ipaddress
import re
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

Purpose = Literal["server", "client"]
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
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
    ca: Issued | Signer,
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
    ``hosts`` the DNS names and IP addresses in the SAN (a server's; none for a client), as
    ``host_name`` reads them. ``not_before``/``not_after`` override the validity (e.g. for an
    expired test certificate). Its Authority Key Identifier is the CA's own Subject Key
    Identifier when the CA has one, so that chains build with a CA made elsewhere too.
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
        .add_extension(_authority_key_id(ca), critical=False)
    )
    names = [host_name(host) for host in hosts]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, _digest(ca.key)), key)


def host_name(text: str) -> x509.GeneralName:
    """The SAN entry for ``text``: ``IP:ADDR`` or an IP address is an address, ``DNS:NAME`` or
    anything else a DNS name (``*.`` as its first label allowed). ValueError, saying why,
    for what no TLS client would ever match (spaces, empty labels, an all-digit last label,
    non-ASCII)."""
    kind, colon, value = text.partition(":")
    kind = kind.upper() if colon and kind.upper() in ("DNS", "IP") else ""
    value = value if kind else text
    if kind in ("IP", ""):
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            if kind:
                raise ValueError(f"{text!r}: {value!r} is not an IP address") from None
    if not value.isascii():
        raise ValueError(f"{text!r}: write a name that is not ASCII in its IDNA form (xn--...)")
    labels = value.removeprefix("*.").split(".")
    if (
        len(value) > 253
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError(
            f"{text!r} is neither a DNS name (letters, digits and hyphens, in labels joined by "
            "dots) nor an IP address"
        )
    return x509.DNSName(value.lower())


def hosts_of(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a server certificate is valid for, in its order."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans if isinstance(name, x509.DNSName | x509.IPAddress)]


# Keys a CA may sign certificates and CRLs with.
_ISSUER_KEYS = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


class CertificateError(ValueError):
    """A CA, a CRL or a certificate is not what it should be; says which."""


@dataclass(frozen=True)
class Signer:
    """A CA certificate and its private key, of any type a CA may have (to sign
    certificates and CRLs with a CA made elsewhere, not only with one of ours)."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @classmethod
    def from_files(cls, cert_path: str | Path, key_path: str | Path) -> Signer:
        """CertificateError unless the files are a CA certificate and its private key."""
        try:
            cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        except ValueError:
            raise CertificateError(f"{cert_path} is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (ValueError, TypeError):
            raise CertificateError(f"{key_path} is not an unencrypted PEM private key") from None
        public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*public) != cert.public_key().public_bytes(*public):
            raise CertificateError(f"{key_path} is not the key of {cert_path}")
        if not isinstance(key, _ISSUER_KEYS):
            raise CertificateError(f"{key_path}: this kind of key cannot sign certificates or CRLs")
        return cls(cert, key)

    def check_can_issue(self, path: str | Path) -> None:
        """CertificateError unless this is a CA certificate that may sign certificates."""
        try:
            constraints = self.cert.extensions.get_extension_for_class(x509.BasicConstraints)
            is_ca = constraints.value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        try:
            usage = self.cert.extensions.get_extension_for_class(x509.KeyUsage).value
            may_sign = usage.key_cert_sign
        except x509.ExtensionNotFound:
            may_sign = True
        if not (is_ca and may_sign):
            raise CertificateError(
                f"{path} is not a CA certificate ({self.cert.subject.rfc4514_string()}): it "
                "cannot issue certificates"
            )

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed ``cert`` (and ``cert`` is not the CA itself)."""
        if cert == self.cert:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def _digest(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    """What a CA key signs with: SHA-256, or nothing for Ed25519/Ed448, which hash by
    themselves."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _authority_key_id(ca: Issued | Signer) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
