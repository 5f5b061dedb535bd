"""A scenario's certificates as a client and a server use them: bytes for gRPC, files for the
programs. The steps' ``scenario_pki`` fixture makes them; the bench makes a bundle with
``jobmgr.pki`` and reads it back with ``ServerFiles.in_dir``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

# The client certificates every scenario gets, by the words its feature files use.
CLIENT_KINDS = (
    "admin",
    "user",
    "no-O",
    "unknown-O",
    "two-O",
    "other-CA",
    "expired",
    "server-cert",
)


@dataclass(frozen=True)
class CertPair:
    """One certificate and its key, as bytes and as files."""

    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path

    @property
    def subject(self) -> str:
        """The certificate's whole Subject as RFC 4514 text: what the server records as the
        owner of the jobs this certificate starts."""
        return x509.load_pem_x509_certificate(self.cert_pem).subject.rfc4514_string()


@dataclass(frozen=True)
class ServerFiles:
    """The TLS files a jobmgr-server is started with."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> ServerFiles:
        """The files as ``jobmgr-certs`` names them in the directory it writes."""
        return cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")


@dataclass(frozen=True)
class ScenarioPKI:
    """A scenario's CA, server certificate and client certificates."""

    ca_pem: bytes
    ca_path: Path
    other_ca_path: Path  # a CA the server does not trust
    server: CertPair
    clients: Mapping[str, CertPair]

    def client(self, kind: str) -> CertPair:
        """The client certificate of one of CLIENT_KINDS."""
        return self.clients[kind]

    def server_files(self) -> ServerFiles:
        return ServerFiles(self.ca_path, self.server.cert_path, self.server.key_path)
