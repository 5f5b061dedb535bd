"""jobmgr-client: start, stop, inspect and read jobs on a jobmgr server.

Errors are one line on stderr, ``error: ...``, and exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from google.protobuf.timestamp_pb2 import Timestamp

# Before grpc is imported, or its C core prints log lines of its own on stderr, around our
# one-line errors. GRPC_VERBOSITY=DEBUG in the environment still turns them on.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc

from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc
from jobmgr.cli import HelpFormatter

DEFAULT_PORT = 31234
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the server sends output in messages of up to 1 MiB

Command = Callable[[job_pb2_grpc.JobManagerStub, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    defaults = HelpFormatter
    parser = argparse.ArgumentParser(
        prog="jobmgr-client",
        formatter_class=defaults,
        description=(
            "Talk to a jobmgr server over mutual TLS 1.3. The client certificate's Subject O "
            "is your role: admin may start and stop jobs, user may only read them."
        ),
        epilog="Run `jobmgr-client COMMAND --help` for a command's own options.",
    )
    parser.add_argument("--host", default="localhost", help="server address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="server port")
    parser.add_argument(
        "--ca", default="./certs/ca.pem", help="CA certificate that signed the server's certificate"
    )
    parser.add_argument("--cert", default="./certs/client_admin.pem", help="client certificate")
    parser.add_argument("--key", default="./certs/client_admin.key", help="client private key")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser(
        "start",
        formatter_class=defaults,
        help="start a job and print its id",
        description=(
            "Start CMD with ARGS on the server and print the job's id. No shell is involved; "
            "put `--` before CMD when it or its arguments start with a dash."
        ),
        epilog="example: jobmgr-client start -- sh -c 'echo hello; sleep 5'",
    )
    start.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")
    start.set_defaults(run=_start)

    stop = commands.add_parser(
        "stop",
        formatter_class=defaults,
        help="stop a job",
        description="Stop a job: SIGTERM, then SIGKILL after the server's grace period. "
        "Returns once nothing of the job is left running.",
    )
    stop.add_argument("id", help="the job's id, as printed by start")
    stop.set_defaults(run=_stop)

    status = commands.add_parser(
        "status",
        formatter_class=defaults,
        help="show a job's state",
        description="Show a job's state, exit code or signal, times and resource usage.",
    )
    status.add_argument("id", help="the job's id, as printed by start")
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")
    status.set_defaults(run=_status)

    output = commands.add_parser(
        "output",
        formatter_class=defaults,
        help="print a job's output",
        description="Print a job's output from its start, following it until the job ends: "
        "its stdout to stdout and its stderr to stderr, byte for byte.",
    )
    output.add_argument("id", help="the job's id, as printed by start")
    output.set_defaults(run=_output)

    listing = commands.add_parser(
        "list",
        formatter_class=defaults,
        help="list jobs",
        description="List every job the server knows, oldest first.",
    )
    listing.set_defaults(run=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "start":
        args.argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not args.argv:
            return _fail("start needs a command, e.g. `jobmgr-client start -- ls -l /`")
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
    reply = stub.Start(job_pb2.StartRequest(cmd=args.argv[0], args=args.argv[1:]))
    print(reply.uuid)
    return 0


def _stop(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    reply = stub.Stop(job_pb2.StopRequest(uuid=args.id))
    job = reply.job
    print(f"stopped job {args.id}: {_outcome(job)}" if job.uuid else f"stopped job {args.id}")
    return 0


def _status(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    job = stub.Status(job_pb2.StatusRequest(uuid=args.id))
    if args.json:
        print(json.dumps(_as_json(job), indent=2))
    else:
        print(_summary(job))
    return 0


def _output(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    stdout, stderr = sys.stdout.buffer, sys.stderr.buffer
    for message in stub.Output(job_pb2.OutputRequest(uuid=args.id)):
        sink: IO[bytes] = stderr if message.stream == job_pb2.STREAM_STDERR else stdout
        sink.write(message.output)
        sink.flush()
    return 0


def _list(stub: job_pb2_grpc.JobManagerStub, args: argparse.Namespace) -> int:
    jobs = stub.List(job_pb2.ListRequest()).jobs
    rows = [("ID", "STATE", "EXIT", "OWNER", "STARTED", "COMMAND")]
    rows += [
        (
            job.uuid,
            job.status,
            _exit_column(job),
            job.owner or "-",
            _time(job.started_at) if job.HasField("started_at") else "-",
            shlex.join(job.argv),
        )
        for job in jobs
    ]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _summary(job: job_pb2.StatusResponse) -> str:
    lines = [
        ("job", job.uuid),
        ("command", shlex.join(job.argv)),
        ("owner", job.owner or "-"),
        ("state", _outcome(job)),
        ("started", _time(job.started_at) if job.HasField("started_at") else "-"),
    ]
    if job.HasField("ended_at"):
        lines.append(("ended", _time(job.ended_at)))
    lines.append(("cpu time", f"{job.cpu_seconds:.2f} s"))
    lines.append(("peak memory", _bytes(job.peak_memory_bytes)))
    lines.append(("limits", _limits(job.limits)))
    if job.reason:
        lines.append(("reason", job.reason))
    return "\n".join(f"{name + ':':<13}{value}" for name, value in lines)


def _outcome(job: job_pb2.StatusResponse) -> str:
    words = [job.status]
    if job.status == "EXITED":
        words.append(f"with code {job.exit_code}")
    elif job.signal:
        words.append(f"by signal {job.signal}")
    if job.oom_killed:
        words.append("(out of memory)")
    return " ".join(words)


def _as_json(job: job_pb2.StatusResponse) -> dict[str, Any]:
    return {
        "id": job.uuid,
        "state": job.status,
        "terminated": job.terminated,
        "exit_code": job.exit_code if job.status == "EXITED" else None,
        "signal": job.signal or None,
        "oom_killed": job.oom_killed,
        "argv": list(job.argv),
        "owner": job.owner,
        "started_at": _epoch(job.started_at) if job.HasField("started_at") else None,
        "ended_at": _epoch(job.ended_at) if job.HasField("ended_at") else None,
        "cpu_seconds": job.cpu_seconds,
        "peak_memory_bytes": job.peak_memory_bytes,
        "limits": {
            name: getattr(job.limits, name) if job.limits.HasField(name) else None
            for name in ("cpu", "memory_bytes", "io_read_bps", "io_write_bps", "pids")
        },
        "reason": job.reason,
    }


def _exit_column(job: job_pb2.StatusResponse) -> str:
    if job.status == "EXITED":
        return str(job.exit_code)
    return f"sig {job.signal}" if job.signal else "-"


def _epoch(stamp: Timestamp) -> float:
    return float(stamp.seconds) + stamp.nanos / 1e9


def _time(stamp: Timestamp) -> str:
    moment = datetime.datetime.fromtimestamp(_epoch(stamp)).astimezone()
    return moment.isoformat(sep=" ", timespec="seconds")


def _bytes(count: float) -> str:
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if count < 1024 or unit == "GiB":
            break
    return f"{count:.1f} {unit}"


def _limits(limits: job_pb2.Limits) -> str:
    """The limits in force, in words; 0 (or unset) means unlimited."""
    words = [
        f"cpu {limits.cpu:g}" if limits.cpu else "cpu unlimited",
        f"memory {_bytes(limits.memory_bytes)}" if limits.memory_bytes else "memory unlimited",
        f"io read {_bytes(limits.io_read_bps)}/s" if limits.io_read_bps else "io read unlimited",
        f"io write {_bytes(limits.io_write_bps)}/s"
        if limits.io_write_bps
        else "io write unlimited",
        f"pids {limits.pids}" if limits.pids else "pids unlimited",
    ]
    return ", ".join(words)


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


def _describe(error: grpc.RpcError, target: str) -> str:
    code = error.code()
    details = " ".join(str(error.details() or code.name).split())
    if code != grpc.StatusCode.UNAVAILABLE:
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
