"""jobmgr-certs: a CA and its certificates for a deployment of jobmgr.

``init`` writes a CA and a starter set (a server certificate for localhost, an admin and a
user client certificate), or the CA alone; ``server`` and ``client`` issue one more
certificate from that CA, for another host or another person; ``revoke`` adds certificates
to the CA's revocation list. No file is ever overwritten without ``--force``; keys are 0600.
Exit status: 0 done, 1 refused or failed (one line on stderr, nothing written), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from jobmgr import pki
from jobmgr.cli import HelpFormatter, add_version_flag

from . import _issuing
from ._issuing import fail

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

# CRL entry reasons; a hold (to be lifted later) is not one: jobmgr revokes for good.
REASONS = {
    flag.name: flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.certificate_hold)
}
# Options written before any command are init's, as they were before there were commands.
INIT_BEFORE_COMMAND = {"out": "--out", "host": "--host", "force": "--force", "days": "--days"}

EPILOG = """\
`jobmgr-certs COMMAND --help` explains each command, with examples.

examples:
  jobmgr-certs --out certs          # = jobmgr-certs init --dir certs (what `make certs` runs)
  jobmgr-certs init --ca-only --dir /root/jobmgr-ca
  jobmgr-certs server --dir /root/jobmgr-ca --name jobs1.example.org --san 10.0.0.5
  jobmgr-certs client --dir /root/jobmgr-ca --name alice --role user
  jobmgr-certs revoke --dir /root/jobmgr-ca /root/jobmgr-ca/client-alice.pem

exit status:
  0  done; init also when every file it would write is there already (it keeps them)
  1  refused or failed: one line on stderr says why, and nothing was written
  2  a usage error
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobmgr-certs",
        formatter_class=HelpFormatter,
        description=(
            "Make the certificates of a jobmgr deployment: one CA, a server certificate per "
            "host, a client certificate per person or program (its Subject O is its role). "
            "ECDSA P-256 keys, written 0600; no file is overwritten unless --force. With no "
            "command, it runs init with the options below."
        ),
        epilog=EPILOG,
    )
    add_version_flag(parser)
    legacy = parser.add_argument_group("init's options, for the form without a command")
    legacy.add_argument(
        "--out", dest="before_out", metavar="DIR", help="as init --dir (default: ./certs)"
    )
    legacy.add_argument(
        "--host", dest="before_host", action="append", type=_host, metavar="NAME",
        help="as init --host",
    )  # fmt: skip
    legacy.add_argument("--force", dest="before_force", action="store_true", help="as init")
    legacy.add_argument("--days", dest="before_days", type=_days, metavar="N", help="as init")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_init(commands)
    _add_server(commands)
    _add_client(commands)
    _add_revoke(commands)
    return parser


def _add_init(commands: Commands) -> None:
    init = commands.add_parser(
        "init",
        formatter_class=HelpFormatter,
        help="a CA and a starter set of certificates",
        description=(
            "Write ca.pem/ca.key, server.pem/server.key (valid for localhost, 127.0.0.1 and "
            "::1, plus each --host) and the client pairs client_admin (Subject O=admin) and "
            "client_user (O=user) into --dir; or, with --ca-only, the CA alone, to issue a "
            "deployment's certificates from with `server` and `client`. When every one of "
            "those files is there already it keeps them and exits 0, unless server.pem is not "
            "valid for a --host (exit 1: issue that host its own certificate with `server`). "
            "--force makes them all anew, the CA too: certificates the old CA issued are then "
            "trusted by no server that takes the new ca.pem."
        ),
        epilog=(
            "examples:\n"
            "  jobmgr-certs init                         # ./certs, for one host\n"
            "  jobmgr-certs init --host jobs.example.org --host 10.0.0.5\n"
            "  jobmgr-certs init --ca-only --dir /root/jobmgr-ca   # a deployment's CA"
        ),
    )
    init.add_argument("--dir", "--out", default="./certs", help="directory to write into")
    init.add_argument(
        "--host", action="append", default=[], type=_host, metavar="NAME",
        help="another DNS name or IP address for server.pem (repeatable)",
    )  # fmt: skip
    init.add_argument("--ca-only", action="store_true", help="write only ca.pem and ca.key")
    _add_common(
        init,
        force_help="replace every file init writes, the CA included",
        days_help="validity of each certificate, in days",
    )


def _add_server(commands: Commands) -> None:
    server = commands.add_parser(
        "server",
        formatter_class=HelpFormatter,
        help="a server certificate for one more host",
        description=(
            "Issue a server certificate (EKU serverAuth, Subject O=jobmgr, CN=NAME) from the CA "
            "in --dir (or --ca/--ca-key), valid for NAME and every --san: the names and "
            "addresses clients dial that host by. Written to DIR/server-NAME.pem and "
            "DIR/server-NAME.key (0600) unless --cert/--key say where. Copy both, with ca.pem "
            "(never ca.key), to the host, and start jobmgr-server there with --ca, --cert and "
            "--key (or [server] ca, cert, key in its configuration)."
        ),
        epilog=(
            "examples:\n"
            "  jobmgr-certs server --name jobs1.example.org --san 10.0.0.5 --san jobs1\n"
            "  jobmgr-certs server --dir /root/jobmgr-ca --name h2 --san IP:192.0.2.7 \\\n"
            "      --cert /tmp/h2/server.pem --key /tmp/h2/server.key"
        ),
    )
    server.add_argument(
        "--name", required=True, type=_host, metavar="HOST",
        help="the host's DNS name or address (its CN, and the first name it is valid for)",
    )  # fmt: skip
    server.add_argument(
        "--san", action="extend", nargs="+", default=[], type=_host, metavar="NAME",
        help="more DNS names or IP addresses it is valid for; DNS:NAME and IP:ADDR also "
        "accepted (repeatable)",
    )  # fmt: skip
    _add_leaf_files(server, "server")


def _add_client(commands: Commands) -> None:
    client = commands.add_parser(
        "client",
        formatter_class=HelpFormatter,
        help="a client certificate for one more person or program",
        description=(
            "Issue a client certificate (EKU clientAuth, Subject O=ROLE, CN=NAME) from the CA "
            "in --dir (or --ca/--ca-key). Its Subject is who the caller is: the owner of the "
            "jobs it starts. ROLE is what it may call: admin (everything) or user (read only) "
            "by default, or a role the server's [access.roles] names. Written to "
            "DIR/client-NAME.pem and DIR/client-NAME.key (0600) unless --cert/--key say where."
        ),
        epilog=(
            "examples:\n"
            "  jobmgr-certs client --name alice --role user\n"
            "  jobmgr-certs client --dir /root/jobmgr-ca --name ci-runner --role admin"
        ),
    )
    client.add_argument(
        "--name", required=True, type=_subject_value, metavar="CN",
        help="who it is for: the Subject CN, e.g. a person's login",
    )  # fmt: skip
    client.add_argument(
        "--role", required=True, type=_subject_value, help="the Subject O: admin, user, ..."
    )
    _add_leaf_files(client, "client")


def _add_leaf_files(sub: argparse.ArgumentParser, kind: str) -> None:
    sub.add_argument("--dir", default="./certs", help="where the CA is, and the files go")
    sub.add_argument("--ca", metavar="PATH", help="CA certificate (default: DIR/ca.pem)")
    sub.add_argument("--ca-key", metavar="PATH", help="CA private key (default: DIR/ca.key)")
    sub.add_argument(
        "--cert", metavar="PATH",
        help=f"where to write the certificate (default: DIR/{kind}-NAME.pem)",
    )  # fmt: skip
    sub.add_argument(
        "--key", metavar="PATH",
        help="where to write the key (default: the --cert path ending in .key)",
    )  # fmt: skip
    _add_common(sub, force_help="replace the certificate and key if they exist")


def _add_common(
    sub: argparse.ArgumentParser,
    *,
    force_help: str,
    days_help: str = "validity, in days (never past the CA's own)",
) -> None:
    sub.add_argument("--days", type=_days, default=pki.DEFAULT_DAYS, metavar="N", help=days_help)
    sub.add_argument("--force", action="store_true", help=force_help)


def _add_revoke(commands: Commands) -> None:
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
        type=_days,
        default=pki.DEFAULT_DAYS,
        metavar="N",
        help="days until the list is due to be replaced (its nextUpdate); jobmgr-server "
        "warns once it is past, and keeps enforcing it",
    )


# ---- argument types: a bad value is a usage error (exit 2) --------------------------------------


def _serial(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a serial number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a serial number is positive")
    return value


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _host(text: str) -> str:
    try:
        pki.host_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _subject_value(text: str) -> str:
    """A CN or O: what a person can read back in a Subject, and X.509's 64 characters."""
    if not text.strip() or not text.isprintable() or len(text) > 64:
        raise argparse.ArgumentTypeError(f"{text!r}: 1 to 64 printable characters, not only spaces")
    return text


# ---- commands ---------------------------------------------------------------------------------


def revoke(args: argparse.Namespace) -> int:
    """``jobmgr-certs revoke``: exit 0 once the CRL is written, 1 (and nothing written) if
    anything is wrong."""
    out = Path(args.dir)
    crl_path = Path(args.crl or out / "crl.pem")
    try:
        ca = pki.Signer.from_files(args.ca or out / "ca.pem", args.ca_key or out / "ca.key")
        previous = pki.read_crl(crl_path, ca)
        serials = {serial: "" for serial in args.serial}
        for path in args.certificates:
            cert = _certificate(path)
            if not ca.issued(cert):
                raise pki.CertificateError(
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
    except pki.CertificateError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{exc.filename or crl_path}: {exc.strerror or exc}")
    print(
        f"wrote {crl_path}: {len(list(crl))} revoked; start jobmgr-server with --crl "
        f"{crl_path}, or send it SIGHUP if it already runs with it"
    )
    return 0


def _certificate(path: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except ValueError:
        raise pki.CertificateError(f"{path} is not a PEM certificate") from None


COMMANDS = {
    "init": _issuing.init,
    "server": _issuing.server,
    "client": _issuing.client,
    "revoke": revoke,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    before = [flag for dest, flag in INIT_BEFORE_COMMAND.items() if getattr(args, f"before_{dest}")]
    if args.command is None:
        args = argparse.Namespace(
            command="init",
            dir=args.before_out or "./certs",
            host=args.before_host or [],
            force=args.before_force,
            days=args.before_days or pki.DEFAULT_DAYS,
            ca_only=False,
        )
    elif before:
        parser.error(
            f"{', '.join(before)}: options written before a command are init's; write "
            f"{args.command}'s after it (jobmgr-certs {args.command} --help)"
        )
    if args.command == "init" and args.ca_only and args.host:
        parser.error("--host names are for server.pem, which init --ca-only does not write")
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
