"""A client certificate's Subject as the server records it as a job's owner (RFC 4514 text).

Its own module, free of the harness, so that any step module can import it."""

from __future__ import annotations

from cryptography import x509

from .fixtures_pki import CertPair


def subject_of(pair: CertPair) -> str:
    """The Subject of ``pair``'s certificate, as the owner of the jobs it starts reads."""
    return x509.load_pem_x509_certificate(pair.cert_pem).subject.rfc4514_string()
