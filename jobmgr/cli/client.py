"""jobmgr-client: start, follow, stop, inspect, list and read jobs on a jobmgr server.

Errors are one line on stderr, ``error: ...``, and exit status 1 (2 for bad usage). ``run``
(``start --follow``) exits with the job's own exit status instead (see _follow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Before grpc is imported, or its C core prints log lines of its own on stderr, around our
# one-line errors. GRPC_VERBOSITY=DEBUG in the environment still turns them on.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc

from jobmgr.api import DEFAULT_PORT, MAX_MESSAGE_BYTES, channel_credentials, job_pb2, job_pb2_grpc
from jobmgr.cli import HelpFormatter, add_version_flag

from . import _render
from ._follow import follow, write_output
from ._jobflags import add_grace_flag, add_job_flags, duration, start_request

STATES = ("running", "exited", "stopped", "failed", "lost")

Command = Callable[[job_pb2_grpc.JobManagerStub, argparse.Namespace], int]

EPILOG = """\
examples:
  jobmgr-client run -- sh -c 'make test'         # stream its output, exit with its status
  jobmgr-client start --memory 256M --cpu 0.5 --timeout 10m -- ./build.sh
  jobmgr-client output --tail 20 JOB             # its last 20 lines, then follow it
  jobmgr-client list --state running
  jobmgr-client --cert certs/client_user.pem --key certs/client_user.key list --json

Run `jobmgr-client COMMAND --help` for a command's own options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobmgr-client",
        formatter_class=HelpFormatter,
        description=(
            "Talk to a jobmgr server over mutual TLS 1.3. The client certificate's Subject O "
            "is your role: admin may start and stop jobs, user may only read them."
        ),
        epilog=EPILOG,
    )
    add_version_flag(parser)
    parser.add_argument("--host", default="localhost", help="server address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="server port")
    parser.add_argument(
        "--ca", default="./certs/ca.pem", help="CA certificate that signed the server's certificate"
    )
    parser.add_argument("--cert", default="./certs/client_admin.pem", help="client certificate")
    parser.add_argument("--key", default="./certs/client_admin.key", help="client private key")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Command, *, help: str, description: str, epilog: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, formatter_class=HelpFormatter, help=help, description=description, epilog=epilog
        )
        sub.set_defaults(run=run)
        return sub

    # `run` is `start --follow` under a name of its own (not an argparse alias: it follows
    # by default, so its defaults differ).
    for name in ("start", "run"):
        following = name == "run"
        start = command(
            name,
            _start,
            help="start a job and follow it to its end" if following else "start a job",
            description=_RUN_DESCRIPTION if following else _START_DESCRIPTION,
            epilog=_RUN_EPILOG if following else _START_EPILOG,
        )
        start.set_defaults(follow=following)
        if not following:
            start.add_argument(
                "--follow", action="store_true", help="the same as `run`: follow it to its end"
            )
        start.add_argument(
            "--stop-on-interrupt",
            action="store_true",
            help="while following, Ctrl-C stops the job instead of detaching from it",
        )
        add_grace_flag(start, what="--stop-on-interrupt stops the job")
        add_job_flags(start)
        start.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")

    stop = command(
        "stop",
        _stop,
        help="stop a job",
        description="Stop a job: SIGTERM, then SIGKILL after the grace period. Returns once "
        "nothing of the job is left running.",
        epilog="example: jobmgr-client stop --grace 30s JOB",
    )
    stop.add_argument("id", help="the job's id, as printed by start")
    add_grace_flag(stop, what="stopping")

    status = command(
        "status",
        _status,
        help="show a job's state",
        description="Show a job's state, exit code or signal, times, resource usage and "
        "whether its output was truncated.",
        epilog="example: jobmgr-client status --json JOB | jq .exit_code",
    )
    status.add_argument("id", help="the job's id, as printed by start")
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")

    output = command(
        "output",
        _output,
        help="print a job's output",
        description="Print a job's output from its start, following it until the job ends: "
        "its stdout to stdout and its stderr to stderr, byte for byte.",
        epilog="examples:\n  jobmgr-client output JOB\n  jobmgr-client output --no-follow "
        "JOB > job.log\n  jobmgr-client output --tail 50 JOB",
    )
    output.add_argument("id", help="the job's id, as printed by start")
    output.add_argument("--no-follow", action="store_true", help="print what is there now and exit")
    output.add_argument(
        "--tail",
        type=_number_of("lines", 63),
        metavar="N",
        help="start from the last N lines, not the first byte",
    )

    listing = command(
        "list",
        _list,
        help="list jobs",
        description="List the jobs the server knows (those you may see), oldest first: id, "
        "state, exit code or signal, owner, start time and command.",
        epilog="examples:\n  jobmgr-client list --state running\n  jobmgr-client list "
        "--owner client_admin --json",
    )
    listing.add_argument("--state", choices=STATES, help="only jobs in this state")
    listing.add_argument(
        "--owner",
        metavar="WHO",
        help="only jobs this client started: the CN of its certificate (client_admin) or its "
        "whole Subject as the OWNER column shows it (CN=client_admin,O=admin)",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.add_argument(
        "--page-size",
        type=_number_of("jobs", 32),
        default=0,
        metavar="N",
        help="ask for at most N jobs per request (default: as many as fit in one reply); "
        "every page is fetched either way",
    )
    return parser


_START_DESCRIPTION = (
    "Start CMD with ARGS on the server and print the job's id. No shell is involved; put "
    "`--` before CMD when it or its arguments start with a dash. Arguments pass byte for "
    "byte, even when they are not UTF-8."
)
_START_EPILOG = """\
examples:
  jobmgr-client start -- sh -c 'echo hello; sleep 5'
  jobmgr-client start --memory 256M --cpu 0.5 --pids 100 -- ./crunch --fast
  jobmgr-client start --env MODE=fast --cwd /srv/app --timeout 30s -- ./job.sh
  jobmgr-client start --follow -- make test        # the same as `run`
"""
_RUN_DESCRIPTION = (
    "Start CMD with ARGS, stream its stdout and stderr to ours until it ends, and exit with "
    "its exit code (128 + the signal when a signal ended it: 137 for SIGKILL, 143 for "
    "SIGTERM; 1 if the server lost it). Ctrl-C detaches, leaving the job running, and says "
    "how to reattach; with --stop-on-interrupt it stops the job instead."
)
_RUN_EPILOG = """\
examples:
  jobmgr-client run -- sh -c 'echo hello; exit 3'; echo $?     # hello, then 3
  jobmgr-client run --timeout 5m --memory 1G -- ./nightly.sh
  jobmgr-client run --stop-on-interrupt --grace 10s -- ./server --port 8080
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("start", "run"):
        args.argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not args.argv:
            return _fail(f"{args.command} needs a command, e.g. `jobmgr-client start -- ls -l /`")
        if not args.follow and (args.stop_on_interrupt or args.grace is not None):
            return _fail("--stop-on-interrupt and --grace apply only with --follow (or `run`)")
    try:
        credentials = channel_credentials(
            ca_pem=_read(args.ca, "--ca"),
            cert_pem=_read(args.cert, "--cert"),
            key_pem=_read(args.key, "--key"),
        )
    except _UnreadableFile as exc:
        return _fail(str(exc))
    target = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    try:
        with grpc.secure_channel(target, credentials, options=options) as channel:
            run: Command = args.run
            return run(job_pb2_grpc.JobManagerStub(channel), args)
    except grpc.RpcError as exc:
        return _fail(_describe(exc, target))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`). Point stdout at /dev/null so the final flush
        # at exit does not fail again, as the Python docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _start(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    reply = stub.Start(start_request(args))
    if not args.follow:
        print(reply.uuid)
        return 0
    grace = None if args.grace is None else duration(args.grace)
    return follow(stub, reply.uuid, stop_on_interrupt=args.stop_on_interrupt, grace=grace)


def _stop(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    grace = None if args.grace is None else duration(args.grace)
    job = stub.Stop(job_pb2.StopRequest(uuid=args.id, grace=grace)).job
    if not job.uuid:
        print(f"stopped {args.id}")
    elif job.state == job_pb2.JOB_STATE_STOPPED:
        print(f"stopped job {args.id}: {_render.outcome(job)}")
    else:  # it ended by itself before the stop reached it
        print(f"job {args.id} had already ended: {_render.outcome(job)}")
    return 0


def _status(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    job = stub.Status(job_pb2.StatusRequest(uuid=args.id))
    print(json.dumps(_render.as_json(job), indent=2) if args.json else _render.summary(job))
    return 0


def _output(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    request = job_pb2.OutputRequest(uuid=args.id, no_follow=args.no_follow)
    if args.tail is not None:
        request.tail = args.tail
    write_output(stub.Output(request))
    return 0


def _list(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    state = job_pb2.JobState.Value(f"JOB_STATE_{(args.state or 'unspecified').upper()}")
    request = job_pb2.ListRequest(state=state, owner=args.owner or "", page_size=args.page_size)
    jobs = []
    while True:  # a long list comes in pages
        reply = stub.List(request)
        jobs += reply.jobs
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    if args.json:
        print(json.dumps([_render.as_json(job) for job in jobs], indent=2))
    else:
        print(_render.table(jobs))
    return 0


def _number_of(what: str, bits: int) -> Callable[[str], int]:
    """An argparse type: a whole number of ``what`` that fits the field's ``bits``."""

    def parse(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what}")
        if int(text) >= 2**bits:
            raise argparse.ArgumentTypeError(f"{text} {what} is more than the server takes")
        return int(text)

    return parse


class _UnreadableFile(Exception):
    pass


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        hint = " (create certificates with `jobmgr-certs`, or point the flag at yours)"
        raise _UnreadableFile(f"cannot read {flag} {path}: {exc.strerror}{hint}") from None


# Why a connection fails, from words in gRPC's message -> what to tell the user.
_CONNECTION_HINTS = (
    (
        "Connection refused",
        "nothing listens there; is jobmgr-server running on that --host and --port?",
    ),
    ("security handshaker", "--cert and --key must be a PEM certificate and its own private key"),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the server's certificate does not verify against --ca, or is not valid for --host",
    ),
    (
        "Socket closed",
        "the server refused the TLS handshake; it wants TLS 1.3 and a client certificate "
        "signed by its CA, unexpired and made for clients",
    ),
)


# An UNAVAILABLE the server itself answered starts so; any other is a connection failure.
_SERVER_UNAVAILABLE = ("the job launcher", "the worker is closed")


def _describe(error: grpc.RpcError, target: str) -> str:
    code = error.code()
    details = " ".join(str(error.details() or code.name).split())
    if code != grpc.StatusCode.UNAVAILABLE or details.startswith(_SERVER_UNAVAILABLE):
        return details
    for words, hint in _CONNECTION_HINTS:
        if words in details:
            return f"cannot connect to jobmgr-server at {target}: {hint} ({details})"
    return f"cannot connect to jobmgr-server at {target}: {details}"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
