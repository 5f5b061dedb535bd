"""``jobmgr-client context list|use|show``: the named servers of the client's config file.

Loads neither grpc nor protobuf: it reads and writes one small TOML file.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobmgr.client._contextfile import ContextFile
    from jobmgr.client._settings import Settings

CONTEXT_HELP = """\
A context names a server and the files to present to it, in
$XDG_CONFIG_HOME/jobmgr/config.toml (~/.config/jobmgr/config.toml):

  current = "prod"
  [contexts.prod]
  address = "jobs1.example.org:31234"
  ca = "/etc/jobmgr/ca.pem"        # relative paths: relative to the file; ~ expands
  cert = "~/.jobmgr/me.pem"
  key = "~/.jobmgr/me.key"

Each setting comes from, first to last: its own flag (--host, --port, --ca,
--cert with --key); the context --context names; the variables JOBMGR_ADDR
(HOST[:PORT]), JOBMGR_CA, JOBMGR_CERT with JOBMGR_KEY; the context that
JOBMGR_CONTEXT names, else the file's current one; and last ./certs in the
working directory with localhost:31234. A certificate and its key always
come from the same place.

examples:
  jobmgr-client context list
  jobmgr-client context use prod
  jobmgr-client --context staging context show
"""


def add_commands(context: argparse.ArgumentParser) -> None:
    actions = context.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the contexts in the config file; * marks the current one")
    use = actions.add_parser("use", help="make NAME the current context")
    use.add_argument("name", metavar="NAME")
    actions.add_parser(
        "show", help="the server and files this client would use, and where each comes from"
    )


def run(args: argparse.Namespace) -> int:
    from jobmgr.client._contextfile import ContextFile
    from jobmgr.client._settings import Settings

    file = ContextFile.load(ContextFile.default_path())
    if args.action == "use":
        file.use(args.name)
        print(f"current context: {args.name} ({file.path})")
    elif args.action == "list":
        print(_table(file))
    else:
        settings = Settings.resolve(
            context=args.context,
            host=args.host,
            port=args.port,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
        )
        print(_show(file, settings))
    return 0


def _table(file: ContextFile) -> str:
    rows = [("CURRENT", "NAME", "ADDRESS", "CERT")]
    for name, context in sorted(file.contexts.items()):
        rows.append(
            (
                "*" if name == file.current else "",
                name,
                context.address or "-",
                str(context.cert) if context.cert else "-",
            )
        )
    if len(rows) == 1:
        return f"no contexts in {file.path}"
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _show(file: ContextFile, settings: Settings) -> str:
    sources = settings.sources
    where = (
        sources["host"]
        if sources["host"] == sources["port"]
        else (f"host: {sources['host']}, port: {sources['port']}")
    )
    lines = [
        ("context", settings.context or "none"),
        ("address", f"{settings.address}  ({where})"),
        ("ca", f"{settings.ca}  ({sources['ca']})"),
        ("cert", f"{settings.cert}  ({sources['cert']})"),
        ("key", f"{settings.key}  ({sources['cert']})"),
        ("config file", str(file.path) + ("" if file.path.exists() else "  (none)")),
    ]
    return "\n".join(f"{name + ':':<13}{value}" for name, value in lines)
