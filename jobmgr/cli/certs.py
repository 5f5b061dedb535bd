"""jobmgr-certs: write a CA, a server certificate and admin/user client certificates."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobmgr import pki
from jobmgr.cli import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobmgr-certs",
        formatter_class=HelpFormatter,
        description=(
            "Write ca.pem/ca.key, server.pem/server.key and the client pairs "
            "client_admin (Subject O=admin) and client_user (O=user) into a directory. "
            "ECDSA P-256 keys, written 0600; the server certificate is valid for localhost, "
            "127.0.0.1 and ::1 plus any --host. Existing files are left alone unless --force."
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
