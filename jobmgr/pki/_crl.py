"""The CA's certificate revocation list: read, added to, written."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._certs import DEFAULT_DAYS, CertificateError, Signer, _digest, _now


def read_crl(path: str | Path, ca: Signer) -> x509.CertificateRevocationList | None:
    """The CRL at ``path`` (None if there is none yet); CertificateError unless ``ca``
    signed it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise CertificateError(f"{path} is not a PEM CRL") from None
    public = ca.cert.public_key()
    if crl.issuer != ca.cert.subject or not crl.is_signature_valid(public):  # type: ignore[arg-type]
        raise CertificateError(
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
    return builder.sign(ca.key, _digest(ca.key))


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _crl_number(crl: x509.CertificateRevocationList | None) -> int:
    if crl is None:
        return 0
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0
