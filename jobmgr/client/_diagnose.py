"""Why a server cannot be reached, found by trying: a TCP connection, then a TLS 1.3
handshake with the client's own files, judged by errno and TLS alert codes.

gRPC reports every such failure as UNAVAILABLE with a message meant for people; this module
runs only after such a failure, to say which it was: nothing listening, a name that does not
resolve, a server certificate the CA does not vouch for, a client certificate the server
refuses. It costs nothing on the path that works.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

# OpenSSL's reason for the alert a server sends when it refuses the client's certificate.
_REFUSED_CERTIFICATE = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV1_ALERT_DECRYPT_ERROR",
    }
)
_OLD_TLS = frozenset(
    {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"}
)
_REFUSED = (
    "the server refused the TLS handshake: it wants TLS 1.3 and a client certificate signed "
    "by its CA, unexpired and made for clients"
)
_X509_HOSTNAME_MISMATCH = 62
_X509_CERT_HAS_EXPIRED = 10


def diagnose(
    host: str, port: int, *, ca: Path, cert: Path, key: Path, timeout: float = 3.0
) -> str | None:
    """What stands between this client and the server at host:port, in words a person can
    act on; None when a connection and a handshake work (the server itself refused)."""
    try:
        sock = socket.create_connection((host, port), timeout)
    except socket.gaierror:
        return f"the name {host!r} does not resolve to an address"
    except ConnectionRefusedError:
        return "nothing listens there; is jobmgr-server running at that address and port?"
    except TimeoutError:
        return f"no answer within {timeout:g}s (a firewall, or the wrong address?)"
    except OSError as exc:
        return f"cannot open a connection: {exc.strerror or exc}"
    with sock:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["h2"])
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError):
            return f"the CA file {ca} holds no PEM certificate"
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                return f"the key {key} does not belong to the certificate {cert}"
            return f"{cert} and {key} must be a PEM certificate and its own private key"
        except OSError as exc:
            return f"cannot read {cert} or {key}: {exc.strerror or exc}"
        return _handshake(context, sock, host, ca, timeout)


def _handshake(
    context: ssl.SSLContext, sock: socket.socket, host: str, ca: Path, timeout: float
) -> str | None:
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            tls.settimeout(timeout)
            # In TLS 1.3 the server judges the client's certificate after the client has
            # finished: a refusal comes on the first read, as an alert or as the end of the
            # connection, where a gRPC server that took us sends its HTTP/2 settings.
            if not tls.recv(1):
                return _REFUSED
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == _X509_HOSTNAME_MISMATCH:
            return (
                f"the server's certificate is not valid for the name {host!r}; connect by a "
                "name it holds, or issue it one with this name (jobmgr-certs server --san)"
            )
        if exc.verify_code == _X509_CERT_HAS_EXPIRED:
            return "the server's certificate has expired"
        return f"the server's certificate is not signed by the CA in {ca}"
    except ssl.SSLError as exc:
        if exc.reason in _REFUSED_CERTIFICATE:
            return _REFUSED
        if exc.reason in _OLD_TLS:
            return "the server does not speak TLS 1.3"
        if exc.reason == "WRONG_VERSION_NUMBER":
            return "what listens there does not speak TLS; is it a jobmgr-server?"
        return f"the TLS handshake failed ({exc.reason or exc})"
    except ConnectionError:
        return "the server closed the connection during the TLS handshake"
    except OSError:  # a timeout included: the handshake went through
        return None
    return None
