"""jobmgr-server: serve the job API over mutual TLS 1.3 until SIGTERM or SIGINT."""

import argparse
import asyncio
import dataclasses
import logging
import os
import pwd
import signal
import sys
from collections.abc import Sequence
from typing import Any

# Importing jobmgr.api makes gRPC refuse TLS 1.2 in this process, which works only if nothing
# imported grpc before it; _run() verifies that it did work.
from jobmgr.api import (
    BindError,
    JobServer,
    JobVisibility,
    TLSFloorError,
    raise_fd_limit,
    role_policy,
    set_tls13_floor,
)
from jobmgr.cli import HelpFormatter
from jobmgr.worker import Retention, Worker, WorkerError

from . import _config, _logs
from ._config import ConfigError, ServerConfig
from ._connflags import add_connection_flags
from ._corelog import StderrRelay
from ._malloc import hand_back_freed_memory, keep_freed_memory
from ._tlsfiles import UnsafeTLSFiles, read_server_tls
from ._units import format_duration, format_size, parse_duration, parse_size

SHUTDOWN_RPC_GRACE = 2.0
DEFAULTS = ServerConfig()
log = logging.getLogger("jobmgr.server")

EPILOG = """\
Settings come from built-in defaults, then the --config file, then flags: a flag given \
overrides the file. `--print-config` shows the result (as a file you can start from).

examples:
  jobmgr-server                                   # localhost:31234, certificates in ./certs
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
            "by default admin may start, stop and read jobs; user may only read them. Jobs "
            "run as nobody unless configured otherwise. Must run as root. SIGTERM or SIGINT "
            "stops the running jobs and exits. Also serves gRPC health checking and "
            "reflection, behind the same mutual TLS."
        ),
        epilog=EPILOG,
    )
    add = _adder(parser)
    add("--config", metavar="PATH", help="TOML configuration file (docs/jobmgr.example.toml)")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration as TOML and exit",
    )
    add("--host", default=DEFAULTS.host, help="address to listen on")
    add("--port", type=int, default=DEFAULTS.port, help="port to listen on (0: any free port)")
    add("--ca", default=DEFAULTS.ca, help="CA certificate that client certificates must chain to")
    add("--cert", default=DEFAULTS.cert, help="server certificate")
    add("--key", default=DEFAULTS.key, help="server private key")
    add(
        "--log-format",
        choices=("text", "json"),
        default=DEFAULTS.log_format,
        help="stderr log lines, one per RPC (method, caller, role, job, code, duration)",
    )
    add("--state-dir", default=DEFAULTS.state_dir, help="where job records and output are kept")
    add(
        "--cgroup-parent",
        default=DEFAULTS.cgroup_parent,
        help="cgroup (in every hierarchy) under which each job gets its own",
    )
    add(
        "--grace",
        type=_arg(parse_duration),
        default=format_duration(DEFAULTS.grace),
        metavar="DURATION",
        help="time between SIGTERM and SIGKILL when a job is stopped "
        "without a grace period (5, 5s, 1m)",
    )
    add(
        "--max-running",
        type=int,
        metavar="N",
        default="no cap",
        help="refuse new jobs (RESOURCE_EXHAUSTED) while N run",
    )
    add(
        "--output-cap",
        type=_arg(parse_size),
        metavar="SIZE",
        default=format_size(DEFAULTS.output_cap),
        help="output kept per job; past it output is dropped and the job goes on",
    )
    add(
        "--run-as",
        metavar="USER",
        default=DEFAULTS.run_as,
        help="user jobs run as when they do not ask for one",
    )
    add(
        "--allow-run-as",
        action="append",
        metavar="USER",
        default="nobody",
        help="a user jobs may run as; repeat for more; replaces the file's list; "
        "'*' allows any user, root included",
    )
    add(
        "--retain",
        type=_arg(_retention),
        metavar="count=N,max_age=DURATION",
        default="everything",
        help="finished jobs to keep, oldest pruned first: count=1000, max_age=30d or both",
    )
    add(
        "--default-limit",
        action="append",
        type=_limits_arg("--default-limit"),
        metavar="NAME=VALUE,...",
        default="cpu=1,memory=512M,io_read=10M,io_write=10M,pids=1024",
        help="limits of jobs that do not set them (cpu, memory, io_read, io_write, pids; "
        "0 = unlimited); repeatable",
    )
    add(
        "--max-limit",
        action="append",
        type=_limits_arg("--max-limit"),
        metavar="NAME=VALUE,...",
        default="no maximum",
        help="the most a job may ask for; more is refused with INVALID_ARGUMENT",
    )
    add(
        "--user-sees",
        choices=("all", "own"),
        default=DEFAULTS.user_sees,
        help="jobs a caller with role user may see: all, or only those it started",
    )
    add_connection_flags(add, _arg)
    return parser


def _adder(parser: argparse.ArgumentParser) -> Any:
    """``add_argument`` for flags that override the file: their value stays None unless
    given, so the file's setting survives; ``default`` is only shown in --help."""

    def add(*names: str, default: object = None, help: str = "", **kwargs: Any) -> None:
        shown = f" (default: {default})" if default is not None else ""
        parser.add_argument(*names, default=None, help=help + shown, **kwargs)

    return add


def _arg(parse: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _assignments(text: str) -> dict[str, str]:
    pairs = [item.partition("=") for item in text.split(",") if item]
    if not pairs or any(not sep or not name for name, sep, _ in pairs):
        raise ValueError(f"{text!r}: write NAME=VALUE pairs separated by commas")
    return {name.strip(): value.strip() for name, _, value in pairs}


def _limits_arg(flag: str) -> Any:
    return _arg(lambda text: _config.parse_limits(_assignments(text), flag))


def _retention(text: str) -> dict[str, Any]:
    given = _assignments(text)
    unknown = set(given) - {"count", "max_age"}
    if unknown:
        raise ValueError(f"unknown retention setting {sorted(unknown)[0]!r}: use count, max_age")
    values: dict[str, Any] = {}
    if "count" in given:
        if not given["count"].isdigit():
            raise ValueError(f"count must be a whole number of jobs, got {given['count']!r}")
        values["retain_count"] = int(given["count"])
    if "max_age" in given:
        values["retain_age"] = parse_duration(given["max_age"])
    return values


# Flags whose value is a ServerConfig field of the same name, as it is.
_PLAIN_FLAGS = (
    *("host", "port", "ca", "cert", "key", "log_format", "state_dir", "cgroup_parent"),
    *("grace", "max_running", "output_cap", "run_as", "user_sees"),
    *_config.CONNECTION_FIELDS,
)


def effective_config(args: argparse.Namespace) -> ServerConfig:
    """Built-in defaults, then the --config file, then the flags given; checked."""
    config = ServerConfig()
    if args.config:
        config = config.with_changes(_config.load(args.config))
    flags: dict[str, Any] = {
        name: getattr(args, name) for name in _PLAIN_FLAGS if getattr(args, name) is not None
    }
    if args.allow_run_as is not None:
        flags["allowed_run_as"] = tuple(args.allow_run_as)
    if args.retain is not None:
        flags.update(args.retain)
    config = config.with_changes(flags)
    for limits in args.default_limit or ():
        config = config.with_changes({"default_limits": limits})
    for limits in args.max_limit or ():
        config = config.with_changes({"max_limits": limits})
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
        return _run(config)
    except (_Refusal, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


class _Refusal(Exception):
    """The server cannot run as asked; the message says why and what to do."""


def _run(config: ServerConfig) -> int:
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
        return _run_logged(config)
    finally:
        relay.stop()


def _run_logged(config: ServerConfig) -> int:
    fds = raise_fd_limit()
    limits = config.connection_limits(fds)
    try:
        pwd.getpwnam(config.run_as)
    except KeyError:
        raise _Refusal(
            f"jobs are to run as {config.run_as!r} (run_as), but there is no such user here"
        ) from None
    try:
        tls = read_server_tls(config.ca, config.cert, config.key)
    except UnsafeTLSFiles as exc:
        raise _Refusal(str(exc)) from None
    try:
        worker = Worker(
            config.state_dir,
            cgroup_parent=config.cgroup_parent,
            default_limits=config.default_limits,
            max_limits=config.max_limits,
            default_grace=config.grace,
            max_running=config.max_running,
            output_cap=config.output_cap,
            retention=Retention(count=config.retain_count, max_age=config.retain_age),
            default_run_as=config.run_as,
            allowed_run_as=None if config.any_user_allowed else config.allowed_run_as,
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
        visibility=JobVisibility.restricting({"user"} if config.user_sees == "own" else ()),
        limits=limits,
    )
    try:
        asyncio.run(_serve(worker, server))
    finally:
        worker.close()
    return 0


async def _serve(worker: Worker, server: JobServer) -> None:
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
