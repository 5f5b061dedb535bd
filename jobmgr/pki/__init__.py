"""Certificates for jobmgr: a CA, server certificates and client certificates.

ECDSA P-256 keys (cheap handshakes), random serials, serverAuth-only EKU on a server
certificate and clientAuth-only on a client certificate. A client's role is its Subject O; a
server's O (``jobmgr``) is deliberately not a role. The starter set (``write_bundle``) has a
server certificate for ``localhost``, ``127.0.0.1`` and ``::1``; a deployment's other hosts
and people get theirs from the same CA (``issue``, with a CA loaded by ``Signer.from_files``,
which may be one made elsewhere, of any key type). Keys are written 0600 and never
overwritten unless asked.

Revocation: ``revoke`` adds serial numbers to the CA's certificate revocation list (CRL),
keeping every entry already in it; the CRL is public (written 0644) and signed by the CA,
and jobmgr-server refuses one the CA did not sign.
"""

from ._certs import (
    DEFAULT_DAYS,
    DEFAULT_HOSTS,
    SERVER_ORGANIZATION,
    CertificateError,
    Issued,
    Purpose,
    Signer,
    host_name,
    hosts_of,
    issue,
    make_ca,
)
from ._crl import crl_pem, read_crl, revoke
from ._files import (
    CLIENTS,
    FILE_STEMS,
    ExistingFiles,
    bundle_paths,
    make_dirs,
    write_bundle,
    write_file,
    write_pair,
)

__all__ = [
    "CLIENTS",
    "DEFAULT_DAYS",
    "DEFAULT_HOSTS",
    "FILE_STEMS",
    "SERVER_ORGANIZATION",
    "CertificateError",
    "ExistingFiles",
    "Issued",
    "Purpose",
    "Signer",
    "bundle_paths",
    "crl_pem",
    "host_name",
    "hosts_of",
    "issue",
    "make_ca",
    "make_dirs",
    "read_crl",
    "revoke",
    "write_bundle",
    "write_file",
    "write_pair",
]
