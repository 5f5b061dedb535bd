"""What a client certificate is held to on every call, beyond the handshake: the CA and the
certificate revocation list (CRL) in force now.

grpcio's server credentials take no CRL (gRPC core checks CRLs only in its TLS-credentials
API, which grpcio 1.85 does not expose for servers), so the TLS handshake cannot refuse a
revoked certificate. The access guard asks ``ClientTrust`` instead, before anything else about
the call: a revoked certificate completes the handshake but every call it makes, the first on
a new connection included, is UNAUTHENTICATED before any handler runs. The same question,
asked again when the CA or the CRL is reloaded, ends the open streams of certificates that
no longer pass (see _guard).

A certificate passes when a certificate of the CA file issued it directly (checked by its
signature, so a new CA of the same name does not let the old one's clients back in) and no
CRL of that CA lists its serial number. A CRL must be signed by a CA in the CA file, or it is
refused when loaded.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ._auth import Caller

PEM_CRL_BEGIN = b"-----BEGIN X509 CRL-----"
_VERDICTS_KEPT = 4096


class CRLError(ValueError):
    """The CRL file is not a PEM CRL signed by the CA; the message says which and why."""


@dataclass(frozen=True)
class Revocations:
    """Serial numbers one CA has revoked, from one CRL."""

    issuer: x509.Name
    serials: frozenset[int]
    next_update: datetime.datetime | None


def load_crls(crl_pem: bytes, cas: Sequence[x509.Certificate]) -> list[Revocations]:
    """The CRLs in ``crl_pem`` (one or more PEM blocks), each checked to be signed by one of
    ``cas``; CRLError otherwise."""
    blocks = [PEM_CRL_BEGIN + part for part in crl_pem.split(PEM_CRL_BEGIN)[1:]]
    if not blocks:
        raise CRLError("the CRL file holds no PEM CRL (-----BEGIN X509 CRL-----)")
    loaded = []
    for number, block in enumerate(blocks, 1):
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as exc:
            raise CRLError(f"CRL number {number} in the file cannot be parsed: {exc}") from None
        signer = next((ca for ca in cas if _signed_by(crl, ca)), None)
        if signer is None:
            raise CRLError(
                f"the CRL of issuer {crl.issuer.rfc4514_string()!r} is not signed by the CA "
                "(no certificate in the CA file signed it)"
            )
        loaded.append(
            Revocations(
                issuer=crl.issuer,
                serials=frozenset(entry.serial_number for entry in crl),
                next_update=crl.next_update_utc,
            )
        )
    return loaded


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


class ClientTrust:
    """The CA certificates and CRLs client certificates are held to, on every call."""

    def __init__(self, ca_pem: bytes, crl_pem: bytes | None = None) -> None:
        self.cas = x509.load_pem_x509_certificates(ca_pem)
        self.revocations = load_crls(crl_pem, self.cas) if crl_pem else []
        self._revoked = {(r.issuer, serial) for r in self.revocations for serial in r.serials}
        self._verdicts: dict[bytes, str | None] = {}

    @property
    def revoked_count(self) -> int:
        return len(self._revoked)

    def stale_crls(self, now: datetime.datetime | None = None) -> list[str]:
        """Why each CRL past its nextUpdate is stale (its revocations still hold)."""
        now = now or datetime.datetime.now(datetime.UTC)
        return [
            f"the CRL of {r.issuer.rfc4514_string()} was due to be replaced on "
            f"{r.next_update:%Y-%m-%d %H:%M} UTC (jobmgr-certs revoke writes a fresh one)"
            for r in self.revocations
            if r.next_update is not None and r.next_update < now
        ]

    def refusal(self, caller: Caller) -> str | None:
        """Why ``caller``'s certificate may make no call now, or None if it may."""
        verdict = self._verdicts.get(caller.fingerprint, "")
        if verdict == "":
            verdict = self._judge(caller.certificate)
            if len(self._verdicts) >= _VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[caller.fingerprint] = verdict
        return verdict

    def _judge(self, cert: x509.Certificate) -> str | None:
        serial = f"serial {cert.serial_number:#x}"
        if (cert.issuer, cert.serial_number) in self._revoked:
            return f"the client certificate ({serial}) is revoked by the server's CRL"
        for ca in self.cas:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return None
        return (
            f"the client certificate ({serial}, issuer {cert.issuer.rfc4514_string()!r}) was "
            "not issued by the server's CA in force (it has changed since this connection "
            "was made)"
        )
