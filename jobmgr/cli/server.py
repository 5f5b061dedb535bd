"""jobmgr-server: serve the job API over mutual TLS 1.3 until SIGTERM or SIGINT."""

import argparse
import asyncio
import dataclasses
import logging
import os
import pwd
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Importing jobmgr.api makes gRPC refuse TLS 1.2 in this process, which works only if nothing
# imported grpc before it; _run() verifies that it did work.
from jobmgr.api import (
    BindError,
    JobServer,
    TLSFloorError,
    raise_fd_limit,
    role_policy,
    set_tls13_floor,
)
from jobmgr.cli import HelpFormatter, add_version_flag
from jobmgr.worker import Worker, WorkerError

from . import _config, _logs
from ._config import ConfigError, ServerConfig
from ._corelog import StderrRelay
from ._malloc import hand_back_freed_memory, keep_freed_memory
from ._reload import Reloader, log_trust, visibility_of
from ._setting import PartError, Setting
from ._settings import SETTINGS
from ._tlsfiles import UnsafeTLSFiles, read_server_tls

SHUTDOWN_RPC_GRACE = 2.0
DEFAULTS = ServerConfig()
log = logging.getLogger("jobmgr.server")

EPILOG = f"""\
Settings come from built-in defaults, then the --config file, then flags: a flag given \
overrides the file. `--print-config` shows the result (as a file you can start from).

examples:
  jobmgr-server                   # {DEFAULTS.host}:{DEFAULTS.port}, certificates in ./certs
  jobmgr-server --config /etc/jobmgr/jobmgr.toml --port 4000
  jobmgr-server --config jobmgr.toml --print-config
  jobmgr-server --max-limit memory=2G,cpu=2 --default-limit memory=256M --max-running 50
  jobmgr-server --retain count=1000,max_age=30d --output-cap 100M --log-format json
  jobmgr-server --allow-run-as nobody --allow-run-as build --run-as build
  jobmgr-server --connections-per-peer 32 --streams-per-caller 16 --idle-timeout 1m

Connection limits left unset are derived from the file descriptor limit, which the server \
first raises to its hard limit; the values in force are logged at start (docs/usage.md).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobmgr-server",
        formatter_class=HelpFormatter,
        description=(
            "Run Linux processes in their own cgroups and namespaces on behalf of clients "
            "authenticated by mutual TLS 1.3. A client certificate's Subject O is its role: "
            "by default admin may start, stop and read jobs; user may only read them. Each "
            "job runs as a uid of its own, in a read-only view of the host with a private "
            "scratch directory, /tmp and /dev/shm, no capability and a seccomp filter. Must "
            "run as root. SIGTERM "
            "or SIGINT stops the running jobs and exits. SIGHUP reloads the certificates, the "
            "CA, the CRL, the role and the run-as policy, keeping jobs and connections (a bad "
            "reload changes nothing and logs why). Also serves gRPC health checking and "
            "reflection, behind the same mutual TLS."
        ),
        epilog=EPILOG,
    )
    add_version_flag(parser)
    parser.add_argument(
        "--config", metavar="PATH", help="TOML configuration file (docs/jobmgr.example.toml)"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration as TOML and exit",
    )
    for row in SETTINGS:
        if row.flag is not None:
            _add_flag(parser, row.flag, row, getattr(DEFAULTS, row.field))
    return parser


def _add_flag(parser: argparse.ArgumentParser, flag: str, row: Setting, default: Any) -> None:
    """The setting's flag. Its value stays None unless given, so the file's setting survives
    a flag not given; the default is only shown in --help."""
    options: dict[str, Any] = {"dest": row.field, "default": None, "metavar": row.metavar}
    if row.choices:
        options["choices"] = row.choices
    if row.collect or row.merge:
        options["action"] = "append"
    if not row.collect:
        options["type"] = _converter(row, flag)
    shown = row.shown(default)
    help_text = f"{row.help} (default: {shown})" if shown else row.help
    parser.add_argument(flag, help=help_text.replace("%", "%%"), **options)


def _converter(row: Setting, flag: str) -> Any:
    def convert(text: str) -> Any:
        try:
            return row.parse(text)
        except PartError as exc:
            raise argparse.ArgumentTypeError(exc.at(flag)) from None
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def effective_config(args: argparse.Namespace) -> ServerConfig:
    """Built-in defaults, then the --config file, then the flags given; checked."""
    config = ServerConfig()
    if args.config:
        config = config.with_changes(_config.load(args.config))
    for row in SETTINGS:
        given = getattr(args, row.field, None)
        if given is None:
            continue
        if row.collect:
            try:
                config = config.with_changes({row.field: row.parse(given)})
            except ValueError as exc:
                raise ConfigError(f"{row.flag}: {exc}") from None
        elif row.merge:
            for each in given:
                config = config.with_changes({row.field: each})
        else:
            config = config.with_changes({row.field: given})
    config.check()
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        config = effective_config(args)
        if args.print_config:
            sys.stdout.write(_config.render(config))
            return 0
        return _run(config, lambda: effective_config(args))
    except (_Refusal, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


class _Refusal(Exception):
    """The server cannot run as asked; the message says why and what to do."""


def _run(config: ServerConfig, reread: Callable[[], ServerConfig]) -> int:
    if os.geteuid() != 0:
        raise _Refusal(
            "jobmgr-server must run as root: it creates a cgroup and namespaces for every job "
            "(try: sudo jobmgr-server ...)"
        )
    try:
        set_tls13_floor()
    except TLSFloorError as exc:
        raise _Refusal(str(exc)) from None
    relay = StderrRelay()
    _logs.configure(config.log_format, relay.start())
    try:
        return _run_logged(config, reread)
    finally:
        relay.stop()


def _run_logged(config: ServerConfig, reread: Callable[[], ServerConfig]) -> int:
    fds = raise_fd_limit()
    limits = config.connection_limits(fds)
    try:
        if config.run_as is not None:
            pwd.getpwnam(config.run_as)
    except KeyError:
        raise _Refusal(
            f"jobs are to run as {config.run_as!r} (run_as), but there is no such user here"
        ) from None
    try:
        tls = read_server_tls(config.ca, config.cert, config.key, config.crl)
    except UnsafeTLSFiles as exc:
        raise _Refusal(str(exc)) from None
    log_trust(tls, config)
    try:
        worker = Worker(
            config.state_dir,
            cgroup_parent=config.cgroup_parent,
            default_limits=config.default_limits,
            max_limits=config.max_limits,
            default_grace=config.grace,
            max_running=config.max_running,
            output_cap=config.output_cap,
            retention=config.retention,
            default_run_as=config.run_as,
            allowed_run_as=None if config.any_user_allowed else config.allowed_run_as,
            sandbox=config.sandbox(),
        )
    except (WorkerError, OSError) as exc:
        raise _Refusal(f"cannot start the worker: {exc}") from None
    fields = {"fd_limit": fds, **dataclasses.asdict(limits)}
    log.info("connection limits", extra={"fields": fields})
    server = JobServer(
        worker,
        tls,
        host=config.host,
        port=config.port,
        policy=role_policy(config.roles),
        visibility=visibility_of(config),
        limits=limits,
    )
    try:
        asyncio.run(_serve(worker, server, Reloader(server, config, reread)))
    finally:
        worker.close()
    return 0


async def _serve(worker: Worker, server: JobServer, reload: Callable[[], None]) -> None:
    try:
        await server.start()
    except BindError as exc:
        raise _Refusal(
            f"{exc}: is another program using the port? (gRPC logged why above)"
        ) from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    print(f"server listening at {server.address}", flush=True)
    trimmer = asyncio.create_task(hand_back_freed_memory())
    await stopping.wait()
    trimmer.cancel()
    log.info("shutting down: stopping running jobs")
    # Health checkers learn first; then the jobs, so clients following their output see it
    # end; then the RPCs still open.
    await server.not_serving()
    await asyncio.to_thread(worker.close)
    await server.stop(SHUTDOWN_RPC_GRACE)
    log.info("server stopped")


if __name__ == "__main__":
    sys.exit(main())
