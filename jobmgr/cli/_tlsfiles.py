"""jobmgr-server's certificate files: read them only if nobody else could have changed them.

Like sshd's StrictModes: the private key must be the server's alone (owned by root or by the
server's user, no permission for group or others), and the certificates must not be writable
by anyone else, who could otherwise swap in a CA of their own and let themselves in as admin.
The CRL is held to the same rule as a certificate: whoever could rewrite it could un-revoke.
"""

from __future__ import annotations

import os
import pwd
import stat

from jobmgr.api import CRLError, ServerTLS


class UnsafeTLSFiles(Exception):
    """A certificate file is missing, unreadable, not what it should be, or not safe."""


def read_server_tls(ca: str, cert: str, key: str, crl: str | None = None) -> ServerTLS:
    """The CA, certificate and key files, and the CRL file if there is one, checked;
    UnsafeTLSFiles says what is wrong."""
    files = [("--ca", ca, False), ("--cert", cert, False), ("--key", key, True)]
    if crl is not None:
        files.append(("--crl", crl, False))
    for flag, path, secret in files:
        _check(flag, path, secret=secret)
    try:
        return ServerTLS.from_files(ca, cert, key, crl)
    except OSError as exc:
        raise UnsafeTLSFiles(f"cannot read {exc.filename}: {exc.strerror}") from None
    except CRLError as exc:
        raise UnsafeTLSFiles(f"--crl {crl}: {exc} (--ca {ca})") from None
    except ValueError as exc:
        raise UnsafeTLSFiles(f"{exc} (--ca {ca}, --cert {cert}, --key {key})") from None


def _check(flag: str, path: str, *, secret: bool) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        make = (
            "`jobmgr-certs revoke` writes one, revoking nothing if given no certificate"
            if flag == "--crl"
            else "create certificates with `jobmgr-certs --out ./certs` or `make certs`"
        )
        raise UnsafeTLSFiles(
            f"{flag} {path}: no such file ({make}, or point {flag} at yours)"
        ) from None
    except OSError as exc:
        raise UnsafeTLSFiles(f"{flag} {path}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnsafeTLSFiles(f"{flag} {path} is a directory, not a PEM file")
    if info.st_uid not in (0, os.geteuid()):
        raise UnsafeTLSFiles(
            f"{flag} {path} is owned by {_user(info.st_uid)}, not by root: its owner could "
            f"replace it (chown root {path})"
        )
    mode = stat.S_IMODE(info.st_mode)
    if secret and mode & 0o077:
        raise UnsafeTLSFiles(
            f"{flag} {path} has mode {mode:04o}: a private key must be readable by its owner "
            f"only (chmod 600 {path})"
        )
    if not secret and mode & 0o022:
        raise UnsafeTLSFiles(
            f"{flag} {path} has mode {mode:04o}: others could write to it and swap the "
            f"certificate (chmod 644 {path})"
        )


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
