"""jobmgr-server: serve the job API over mutual TLS 1.3 until SIGTERM or SIGINT."""

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

# Importing jobmgr.api makes gRPC refuse TLS 1.2 in this process, which works only if nothing
# imported grpc before it; _run() verifies that it did work.
from jobmgr.api import BindError, JobServer, ServerTLS, TLSFloorError, set_tls13_floor
from jobmgr.cli import HelpFormatter
from jobmgr.worker import Worker, WorkerError

DEFAULT_PORT = 31234
SHUTDOWN_RPC_GRACE = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobmgr-server",
        formatter_class=HelpFormatter,
        description=(
            "Run Linux processes in their own cgroups and namespaces on behalf of clients "
            "authenticated by mutual TLS 1.3. A client certificate's Subject O is its role: "
            "admin may start, stop and read jobs; user may only read them. Must run as root. "
            "SIGTERM or SIGINT stops the running jobs and exits."
        ),
    )
    parser.add_argument("--host", default="localhost", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (0: any free port)"
    )
    parser.add_argument(
        "--ca",
        default="./certs/ca.pem",
        help="CA certificate that client certificates must chain to",
    )
    parser.add_argument("--cert", default="./certs/server.pem", help="server certificate")
    parser.add_argument("--key", default="./certs/server.key", help="server private key")
    parser.add_argument(
        "--state-dir", default="/var/lib/jobmgr", help="where job records and output are kept"
    )
    parser.add_argument(
        "--cgroup-parent",
        default="jobmgr",
        help="cgroup (in every hierarchy) under which each job gets its own",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds between SIGTERM and SIGKILL when a job is stopped without a grace period",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except _Refusal as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


class _Refusal(Exception):
    """The server cannot run as asked; the message says why and what to do."""


def _run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise _Refusal(f"--port must be between 0 and 65535, got {args.port}")
    if args.grace < 0:
        raise _Refusal(f"--grace must be >= 0 seconds, got {args.grace:g}")
    if os.geteuid() != 0:
        raise _Refusal(
            "jobmgr-server must run as root: it creates a cgroup and namespaces for every job "
            "(try: sudo jobmgr-server ...)"
        )
    try:
        set_tls13_floor()
    except TLSFloorError as exc:
        raise _Refusal(str(exc)) from None
    tls = _read_tls(args)
    try:
        worker = Worker(args.state_dir, cgroup_parent=args.cgroup_parent, default_grace=args.grace)
    except (WorkerError, OSError) as exc:
        raise _Refusal(f"cannot start the worker: {exc}") from None
    try:
        asyncio.run(_serve(worker, JobServer(worker, tls, host=args.host, port=args.port)))
    finally:
        worker.close()
    return 0


def _read_tls(args: argparse.Namespace) -> ServerTLS:
    for flag, path in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.key)):
        if not os.path.exists(path):
            raise _Refusal(
                f"{flag} {path}: no such file (create certificates with "
                f"`jobmgr-certs --out ./certs` or `make certs`, or point {flag} at yours)"
            )
    try:
        return ServerTLS.from_files(args.ca, args.cert, args.key)
    except OSError as exc:
        raise _Refusal(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise _Refusal(f"{exc} (--ca {args.ca}, --cert {args.cert}, --key {args.key})") from None


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
    await stopping.wait()
    print("shutting down: stopping running jobs", file=sys.stderr, flush=True)
    # Jobs first, so clients following their output see it end; then the RPCs still open.
    await asyncio.to_thread(worker.close)
    await server.stop(SHUTDOWN_RPC_GRACE)
    print("server stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
