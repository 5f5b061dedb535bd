"""jobmgr-certs: write a CA, a server certificate and admin/user client certificates; and
``jobmgr-certs revoke``, which adds certificates to the CA's revocation list."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from jobmgr import pki
from jobmgr.cli import HelpFormatter

# CRL entry reasons; a hold (to be lifted later) is not one: jobmgr revokes for good.
REASONS = {
    flag.name: flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.certificate_hold)
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobmgr-certs",
        formatter_class=HelpFormatter,
        description=(
            "Write ca.pem/ca.key, server.pem/server.key and the client pairs "
            "client_admin (Subject O=admin) and client_user (O=user) into a directory. "
            "ECDSA P-256 keys, written 0600; the server certificate is valid for localhost, "
            "127.0.0.1 and ::1 plus any --host. Existing files are left alone unless --force. "
            "`jobmgr-certs revoke --help`: revoke a client certificate."
        ),
    )
    parser.add_argument("--out", default="./certs", help="directory to write into")
    parser.add_argument(
        "--force", action="store_true", help="replace existing certificates and keys"
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="another DNS name or IP address for the server certificate (repeatable)",
    )
    parser.add_argument(
        "--days", type=int, default=pki.DEFAULT_DAYS, help="validity of every certificate"
    )
    commands = parser.add_subparsers(dest="command", metavar="revoke")
    _add_revoke(commands)
    return parser


def _add_revoke(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    revoke = commands.add_parser(
        "revoke",
        formatter_class=HelpFormatter,
        help="add certificates to the CA's revocation list (CRL)",
        description=(
            "Add certificates to the CRL of the CA in --dir (or --ca/--ca-key), keeping every "
            "certificate it already lists, and write it again, signed by the CA (mode 0644). "
            "With no certificate and no --serial it writes the list as it is, with fresh "
            "dates (or an empty one). Then start jobmgr-server with --crl, or send a running "
            "one SIGHUP: a revoked certificate's calls are UNAUTHENTICATED, on connections "
            "already open too."
        ),
        epilog=(
            "examples:\n"
            "  jobmgr-certs revoke certs/client_user.pem\n"
            "  jobmgr-certs revoke --dir /etc/jobmgr --serial 0x1f3a... --reason key_compromise\n"
            "  jobmgr-certs revoke            # an empty certs/crl.pem, for jobmgr-server --crl"
        ),
    )
    revoke.add_argument(
        "certificates", nargs="*", metavar="CERT", help="PEM certificate file issued by the CA"
    )
    revoke.add_argument(
        "--serial",
        action="append",
        default=[],
        type=_serial,
        metavar="N",
        help="serial number to revoke, decimal or 0x hex, for a certificate whose file is "
        "gone (repeatable)",
    )
    revoke.add_argument("--dir", default="./certs", help="where ca.pem, ca.key and crl.pem are")
    revoke.add_argument("--ca", metavar="PATH", help="CA certificate (default: DIR/ca.pem)")
    revoke.add_argument("--ca-key", metavar="PATH", help="CA private key (default: DIR/ca.key)")
    revoke.add_argument(
        "--crl", metavar="PATH", help="revocation list to add to (default: DIR/crl.pem)"
    )
    revoke.add_argument(
        "--reason",
        choices=sorted(REASONS),
        metavar="REASON",
        help="reason recorded with the new entries: " + ", ".join(sorted(REASONS)),
    )
    revoke.add_argument(
        "--days",
        type=int,
        default=pki.DEFAULT_DAYS,
        help="days until the list is due to be replaced (its nextUpdate); jobmgr-server "
        "warns once it is past, and keeps enforcing it",
    )


def _serial(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a serial number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a serial number is positive")
    return value


def revoke(args: argparse.Namespace) -> int:
    """``jobmgr-certs revoke``: exit 0 once the CRL is written, 1 (and nothing written) if
    anything is wrong."""
    out = Path(args.dir)
    crl_path = Path(args.crl or out / "crl.pem")
    if args.days < 1:
        return _fail("--days must be at least 1")
    try:
        ca = pki.Signer.from_files(args.ca or out / "ca.pem", args.ca_key or out / "ca.key")
        previous = pki.read_crl(crl_path, ca)
        serials = {serial: "" for serial in args.serial}
        for path in args.certificates:
            cert = _certificate(path)
            if not ca.issued(cert):
                raise pki.RevocationError(
                    f"{path} was not issued by the CA {ca.cert.subject.rfc4514_string()}: "
                    "its CRL cannot revoke it"
                )
            serials[cert.serial_number] = f" ({path}: {cert.subject.rfc4514_string()})"
        known = {entry.serial_number for entry in previous or ()}
        for serial, what in serials.items():
            said = "was already revoked" if serial in known else "revoked"
            print(f"serial {serial:#x}{what} {said}")
        crl = pki.revoke(ca, previous, serials, reason=REASONS.get(args.reason), days=args.days)
        pki.write_file(crl_path, pki.crl_pem(crl), mode=0o644)
    except pki.RevocationError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or crl_path}: {exc.strerror or exc}")
    print(
        f"wrote {crl_path}: {len(list(crl))} revoked; start jobmgr-server with --crl "
        f"{crl_path}, or send it SIGHUP if it already runs with it"
    )
    return 0


def _certificate(path: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except ValueError:
        raise pki.RevocationError(f"{path} is not a PEM certificate") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "revoke":
        return revoke(args)
    out = Path(args.out)
    if args.days < 1:
        return _fail("--days must be at least 1")
    try:
        written = pki.write_bundle(out, force=args.force, extra_hosts=args.host, days=args.days)
    except pki.ExistingFiles as exc:
        missing = [
            out / f"{stem}.{ext}"
            for stem in pki.FILE_STEMS
            for ext in ("pem", "key")
            if not (out / f"{stem}.{ext}").exists()
        ]
        if not missing:
            print(f"certificates in {out} already exist; kept them (--force replaces them)")
            return 0
        return _fail(
            f"some certificate files already exist ({exc}); refusing to mix them with new "
            "ones: use --force to replace them all, or remove them"
        )
    except OSError as exc:
        return _fail(f"cannot write certificates into {out}: {exc.strerror or exc}")
    print(f"wrote {len(written)} files to {out}: " + " ".join(p.name for p in written))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
