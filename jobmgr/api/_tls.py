"""TLS for the service: TLS 1.3 only, mutual authentication, two walls.

grpcio has no setting for a minimum TLS version (grpc/grpc#37305). It does pass the
environment variable ``GRPC_SSL_CIPHER_SUITES`` to BoringSSL as the cipher list of TLS <= 1.2
(TLS 1.3 suites are fixed and unaffected). Listing only a PSK suite, for which gRPC installs no
PSK callback, leaves TLS 1.2 nothing it can negotiate: every TLS 1.2 handshake fails while
TLS 1.3 works. gRPC reads the variable once, when ``grpc`` is first imported; set later it is
silently ignored. Hence the first wall, ``set_tls13_floor``, must run before that import, and
this module imports ``grpc`` only inside the functions that build credentials.

The second wall, ``negotiated_tls13``, is checked on every RPC against the session's
``auth_context()['ssl_tls_version']`` (grpcio 1.85 reports ``b'TLSv1.3'``), so a future grpcio
that stopped honouring the variable would fail closed rather than serve TLS 1.2.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

CIPHER_SUITES_ENV = "GRPC_SSL_CIPHER_SUITES"
# A TLS <= 1.2 suite that can never be chosen: it needs a PSK callback gRPC does not install.
TLS12_UNUSABLE_SUITES = "PSK-AES128-CBC-SHA"
TLS13 = b"TLSv1.3"


class TLSFloorError(RuntimeError):
    """TLS 1.2 could not be ruled out: ``grpc`` was imported before the floor was set."""


def tls13_floor_active() -> bool:
    """Whether gRPC in this process refuses TLS 1.2 handshakes (see the module docstring)."""
    return os.environ.get(CIPHER_SUITES_ENV) == TLS12_UNUSABLE_SUITES


def set_tls13_floor(*, only_if_possible: bool = False) -> None:
    """Make every gRPC TLS handshake of this process TLS 1.3; must run before ``import grpc``.

    Raises TLSFloorError when ``grpc`` is already imported and the floor is not in force,
    unless ``only_if_possible``, in which case it quietly does nothing (for clients, which
    gain from the floor but do not depend on it).
    """
    if tls13_floor_active():
        return
    if "grpc" in sys.modules:
        if only_if_possible:
            return
        raise TLSFloorError(
            "grpc was imported before jobmgr.api set "
            f"{CIPHER_SUITES_ENV}={TLS12_UNUSABLE_SUITES}, so this process would accept "
            "TLS 1.2; import jobmgr.api before anything that imports grpc, or export the "
            "variable in the environment"
        )
    os.environ[CIPHER_SUITES_ENV] = TLS12_UNUSABLE_SUITES


def negotiated_tls13(auth_context: Mapping[str, Sequence[bytes]]) -> bool:
    """Whether an RPC's session is TLS 1.3, from its ``context.auth_context()``."""
    return list(auth_context.get("ssl_tls_version", ())) == [TLS13]


def negotiated_version(auth_context: Mapping[str, Sequence[bytes]]) -> str:
    """The session's TLS version as a word, for error messages."""
    versions = auth_context.get("ssl_tls_version") or [b"no TLS"]
    return b", ".join(versions).decode(errors="replace")


class ServerCertificates:
    """The server's certificate and key, and the CA client certificates must chain to, for
    each new TLS handshake. ``replace`` makes every handshake from then on use new ones;
    connections already made keep their session (their streams go on).

    Built on ``grpc.dynamic_ssl_server_credentials``: gRPC asks ``_fetch`` before every
    handshake, from one of its own threads, and keeps what it got last when told nothing
    changed (so a new configuration is handed over once, not rebuilt per connection).
    """

    def __init__(self, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        self._initial = (ca_pem, cert_pem, key_pem)
        self._pending: tuple[bytes, bytes, bytes] | None = None
        self._lock = threading.Lock()

    def credentials(self) -> grpc.ServerCredentials:
        """mTLS credentials: client certificates required and verified against the CA."""
        import grpc

        _refuse_unless_floor_active()
        return grpc.dynamic_ssl_server_credentials(
            _configuration(*self._initial), self._fetch, require_client_authentication=True
        )

    def replace(self, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        """Use these from the next handshake on (already checked: see check_server_material)."""
        with self._lock:
            self._pending = (ca_pem, cert_pem, key_pem)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return None if pending is None else _configuration(*pending)


def _configuration(
    ca_pem: bytes, cert_pem: bytes, key_pem: bytes
) -> grpc.ServerCertificateConfiguration:
    import grpc

    return grpc.ssl_server_certificate_configuration(
        [(key_pem, cert_pem)], root_certificates=ca_pem
    )


def channel_credentials(
    *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes
) -> grpc.ChannelCredentials:
    """mTLS for a client: trust only ``ca_pem``, present the client certificate."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def check_server_material(*, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    """Raise ValueError, saying which and why, unless these are a PEM CA certificate, a PEM
    certificate and its own private key (gRPC would only log a cryptic line and fail to bind)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    for what, pem in (("CA certificate", ca_pem), ("server certificate", cert_pem)):
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise ValueError(f"the {what} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("the server key is not an unencrypted PEM private key") from None
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != cert.public_key().public_bytes(*public):
        raise ValueError("the server key does not belong to the server certificate")


def _refuse_unless_floor_active() -> None:
    if not tls13_floor_active():
        set_tls13_floor()  # raises: grpc is imported by now
