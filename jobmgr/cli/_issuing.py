"""jobmgr-certs init, server and client: what each writes, and what it refuses to.

Every check comes before the first write, so a refusal (exit 1) leaves the files as they
were. A key is written before its certificate, 0600, atomically (pki.write_pair).
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

from cryptography import x509

from jobmgr import pki


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def init(args: argparse.Namespace) -> int:
    """The CA and the starter set (or the CA alone), unless they are all there already."""
    out = Path(args.dir)
    paths = pki.bundle_paths(out, ca_only=args.ca_only)
    existing = [path for path in paths if path.exists()]
    if existing and not args.force:
        if len(existing) < len(paths):
            return fail(
                f"some of the files init writes are there already ({_names(existing)}); "
                "refusing to mix them with new ones: --force replaces them all (the CA too), "
                f"and `jobmgr-certs server` or `client` issue more from the CA in {out}"
            )
        if args.host and (lacking := _server_lacks(out / "server.pem", args.host)):
            return fail(lacking)
        print(f"certificates in {out} already exist; kept them (--force replaces them all)")
        return 0
    try:
        pki.write_bundle(
            out, force=True, extra_hosts=args.host, days=args.days, ca_only=args.ca_only
        )
    except OSError as exc:
        return fail(f"cannot write certificates into {out}: {exc.strerror or exc}")
    print(f"wrote {len(paths)} files to {out}: " + " ".join(path.name for path in paths))
    if existing:
        print(
            f"replaced {len(existing)} files, the CA among them: certificates the old CA "
            "issued are trusted by no server that takes the new ca.pem"
        )
    return 0


def _server_lacks(server_pem: Path, hosts: list[str]) -> str | None:
    """Why ``server_pem`` will not do for ``hosts``, or None if it is valid for them all."""
    try:
        cert = x509.load_pem_x509_certificate(server_pem.read_bytes())
    except (OSError, ValueError) as exc:
        return f"{server_pem} cannot be read as a certificate ({exc}); --force replaces it"
    has = pki.hosts_of(cert)
    known = {pki.host_name(name) for name in has}
    lacking = [host for host in hosts if pki.host_name(host) not in known]
    if not lacking:
        return None
    return (
        f"{server_pem} is not valid for {', '.join(lacking)} (it is for {', '.join(has)}); "
        f"kept it, and wrote nothing: issue that host its own certificate from the same CA "
        f"with `jobmgr-certs server --dir {server_pem.parent} --name {lacking[0]}`, or "
        "replace every file, the CA too, with --force"
    )


def server(args: argparse.Namespace) -> int:
    """A server certificate for one host, valid for its name and each --san (each once,
    whichever way it is written: ``h2``, ``DNS:H2``)."""
    hosts = list(dict.fromkeys(str(pki.host_name(host).value) for host in [args.name, *args.san]))
    return _issue(
        args,
        common_name=hosts[0],
        purpose="server",
        organizations=[pki.SERVER_ORGANIZATION],
        hosts=hosts,
    )


def client(args: argparse.Namespace) -> int:
    """A client certificate for one person or program, with one role."""
    from jobmgr.api import DEFAULT_ROLES

    if args.role not in DEFAULT_ROLES:
        print(
            f"note: role {args.role!r} is none of the roles a server knows by default "
            f"({', '.join(DEFAULT_ROLES)}): it may call nothing until the server's "
            "[access.roles] names it",
            file=sys.stderr,
        )
    return _issue(
        args, common_name=args.name, purpose="client", organizations=[args.role], hosts=[]
    )


def _issue(
    args: argparse.Namespace,
    *,
    common_name: str,
    purpose: pki.Purpose,
    organizations: list[str],
    hosts: list[str],
) -> int:
    out = Path(args.dir)
    stem = _file_safe(f"{purpose}-{common_name}")
    cert_path = Path(args.cert) if args.cert else out / f"{stem}.pem"
    key_path = Path(args.key) if args.key else cert_path.with_suffix(".key")
    if cert_path.resolve() == key_path.resolve():
        return fail(f"--cert and --key are the same file ({cert_path}): give each its own")
    ca_path, ca_key_path = Path(args.ca or out / "ca.pem"), Path(args.ca_key or out / "ca.key")
    kept = [path for path in (cert_path, key_path) if path.exists()]
    if kept and not args.force:
        return fail(
            f"{_names(kept)} already {'exist' if len(kept) > 1 else 'exists'}; wrote nothing. "
            "--force replaces them (the certificate replaced stays valid until it expires, "
            "unless `jobmgr-certs revoke` lists it)"
        )
    if not (ca_path.exists() or args.ca):
        return fail(
            f"there is no CA in {out} ({ca_path} is missing): make one with `jobmgr-certs "
            f"init --ca-only --dir {out}`, or point --dir (or --ca and --ca-key) at yours"
        )
    try:
        ca = pki.Signer.from_files(ca_path, ca_key_path)
        ca.check_can_issue(ca_path)
        ca_ends = ca.cert.not_valid_after_utc
        now = datetime.datetime.now(datetime.UTC)
        if ca_ends <= now:
            raise pki.CertificateError(f"the CA {ca_path} expired on {ca_ends:%Y-%m-%d}")
        replaced = _serial_of(cert_path) if cert_path in kept else None
        issued = pki.issue(
            ca,
            purpose=purpose,
            common_name=common_name,
            organizations=organizations,
            hosts=hosts,
            not_after=min(now + datetime.timedelta(days=args.days), ca_ends),
        )
        for directory in {cert_path.parent, key_path.parent}:
            pki.make_dirs(directory)
        pki.write_pair(cert_path, key_path, issued)
    except pki.CertificateError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{exc.filename or cert_path}: {exc.strerror or exc}")
    _say_issued(issued.cert, cert_path, key_path, purpose)
    if ca_ends < now + datetime.timedelta(days=args.days - 1):
        print(f"note: valid only until the CA {ca_path} expires, {ca_ends:%Y-%m-%d}")
    if replaced is not None:
        print(
            f"replaced the certificate with serial {replaced:#x}: it stays valid until it "
            f"expires unless revoked (jobmgr-certs revoke --dir {out} --serial {replaced:#x})"
        )
    return 0


def _say_issued(cert: x509.Certificate, cert_path: Path, key_path: Path, purpose: str) -> None:
    subject = cert.subject.rfc4514_string()
    until = f"until {cert.not_valid_after_utc:%Y-%m-%d}"
    if purpose == "server":
        what = f"{subject}, valid for {', '.join(pki.hosts_of(cert))} {until}"
    else:
        what = f"{subject}, {until}; jobs it starts are owned by {subject}"
    print(f"wrote {cert_path} and {key_path} (0600): {what}")


def _serial_of(path: Path) -> int | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except ValueError:
        return None


def _file_safe(stem: str) -> str:
    """A file name for a CN or host name: anything but letters, digits and ``._@-`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", stem)


def _names(paths: list[Path]) -> str:
    return ", ".join(str(path) for path in paths)
