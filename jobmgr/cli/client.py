"""jobmgr-client: start, follow, stop, inspect, list and read jobs on a jobmgr server.

Exit status: 0 done; 1 an error (one line on stderr, ``error: ...``); 2 a usage error. ``run``
(and ``start --follow``) exits as the job did instead, with 125 for jobmgr's own errors,
usage errors included (see _follow). Built on jobmgr.client; a command imports only what it
needs (``context`` loads no grpc), since most of a short command's time is imports.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

# Before grpc is imported, or its C core prints log lines of its own on stderr, around our
# one-line errors. GRPC_VERBOSITY=DEBUG in the environment still turns them on.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from jobmgr.cli import HelpFormatter, add_version_flag

from . import _contexts

if TYPE_CHECKING:
    from jobmgr.client import Client

EXIT_FAILED, EXIT_USAGE, EXIT_JOBMGR = 1, 2, 125
STATES = ("running", "exited", "stopped", "failed", "lost")
CONNECTION_FLAGS = ("context", "host", "port", "ca", "cert", "key")

Command = Callable[["Client", argparse.Namespace], int]

EPILOG = """\
Where the server is: the flags above, else a context (see
`jobmgr-client context --help`) or JOBMGR_ADDR, JOBMGR_CA, JOBMGR_CERT and
JOBMGR_KEY, else, last, localhost:31234 with ./certs/ca.pem,
./certs/client_admin.pem and ./certs/client_admin.key.

examples:
  jobmgr-client run -- sh -c 'make test'         # stream its output, exit with its status
  jobmgr-client start --memory 256M --cpu 0.5 --timeout 10m -- ./build.sh
  jobmgr-client output --tail 20 3f2b            # a unique id prefix is enough
  jobmgr-client list --state running
  jobmgr-client --context prod --cert me.pem --key me.key list --json

Exit status: 0 done, 1 an error, 2 a usage error; run exits as its job did
(see `jobmgr-client run --help`). Run `jobmgr-client COMMAND --help` for a
command's own options and examples.
"""


class _Parser(argparse.ArgumentParser):
    """Exits with ``usage_status`` on a usage error: 2, but 125 for run, whose other
    statuses are its job's."""

    usage_status = EXIT_USAGE

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_status, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, every command's arguments but that one's are left
    out (each is still listed), since building them all is a tenth of a short command's
    time."""
    parser = _Parser(
        prog="jobmgr-client",
        formatter_class=HelpFormatter,
        description=(
            "Talk to a jobmgr server over mutual TLS 1.3. The client certificate's Subject O "
            "is your role: admin may start and stop jobs, user may only read them."
        ),
        epilog=EPILOG,
    )
    add_version_flag(parser)
    where = parser.add_argument_group("where the server is (see the end of this help)")
    where.add_argument("--context", metavar="NAME", help="a context of the config file")
    where.add_argument("--host", metavar="HOST[:PORT]", help="server address")
    where.add_argument("--port", type=_port, help="server port (31234 by default)")
    where.add_argument("--ca", metavar="PATH", help="CA certificate that signed the server's")
    where.add_argument("--cert", metavar="PATH", help="client certificate (with --key)")
    where.add_argument("--key", metavar="PATH", help="its private key (with --cert)")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(
        name: str, run: Command | None, *, help: str, description: str, epilog: str
    ) -> argparse.ArgumentParser | None:
        sub = commands.add_parser(
            name, formatter_class=HelpFormatter, help=help, description=description, epilog=epilog
        )
        sub.set_defaults(run=run)
        return sub if only in (None, name) else None

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
        if start is None:
            continue
        from ._jobflags import add_grace_flag, add_job_flags  # loaded only where used

        start.set_defaults(follow=following)
        if following:
            start.usage_status = EXIT_JOBMGR  # type: ignore[attr-defined]
        else:
            start.add_argument(
                "-f", "--follow", action="store_true", help="the same as `run`: follow it"
            )
        start.add_argument(
            "--stop-on-interrupt",
            action="store_true",
            help="while following, Ctrl-C stops the job instead of detaching from it",
        )
        add_grace_flag(start, what="following ends by stopping the job")
        add_job_flags(start)
        start.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")

    stop = command(
        "stop",
        _stop,
        help="stop jobs",
        description="Stop jobs: SIGTERM, then SIGKILL after the grace period; all at once, "
        "each returning once nothing of it is left running. A job that has ended is left "
        "as it is. Exit status 1 if any could not be stopped.",
        epilog="examples:\n  jobmgr-client stop --grace 30s 3f2b\n  jobmgr-client list -q "
        "--state running | xargs jobmgr-client stop",
    )
    if stop is not None:
        from ._jobflags import add_grace_flag

        _job_ids(stop.add_argument("ids", nargs="+", metavar="ID", help="job ids or prefixes"))
        add_grace_flag(stop, what="stopping")

    status = command(
        "status",
        _status,
        help="show jobs' state",
        description="Show a job's state, exit code or signal, times, resource usage and "
        "whether its output was truncated. With several ids, one after the other (--json: "
        "an array).",
        epilog="example: jobmgr-client status --json 3f2b | jq .exit_code",
    )
    if status is not None:
        _job_ids(status.add_argument("ids", nargs="+", metavar="ID", help="job ids or prefixes"))
        status.add_argument("--json", action="store_true", help="print machine-readable JSON")

    output = command(
        "output",
        _output,
        help="print a job's output",
        description="Print a job's output from its start, following it until the job ends: "
        "its stdout to stdout and its stderr to stderr, byte for byte. A connection that "
        "drops is taken up again where it left off, so no byte is lost or repeated.",
        epilog="examples:\n  jobmgr-client output 3f2b\n  jobmgr-client output --no-follow "
        "3f2b > job.log\n  jobmgr-client output --tail 50 3f2b",
    )
    if output is not None:
        _job_ids(output.add_argument("id", metavar="ID", help="a job id or unique prefix"))
        follow_or_not = output.add_mutually_exclusive_group()
        follow_or_not.add_argument(
            "-f", "--follow", action="store_true", help="follow a running job (the default)"
        )
        follow_or_not.add_argument(
            "--no-follow", action="store_true", help="print what is there now and exit"
        )
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
        "--owner client_admin --json\n  jobmgr-client list -q --state exited",
    )
    if listing is not None:
        listing.add_argument(
            "--state",
            type=str.lower,
            choices=STATES,
            help="only jobs in this state (any case: running, RUNNING)",
        )
        listing.add_argument(
            "--owner",
            metavar="WHO",
            help="only jobs this client started: the CN of its certificate (client_admin) or its "
            "whole Subject as the OWNER column shows it (CN=client_admin,O=admin)",
        )
        shown = listing.add_mutually_exclusive_group()
        shown.add_argument("--json", action="store_true", help="print a JSON array")
        shown.add_argument("-q", "--quiet", action="store_true", help="only full ids, one per line")
        listing.add_argument(
            "--page-size",
            type=_number_of("jobs", 32),
            default=0,
            metavar="N",
            help="ask for at most N jobs per request (default: as many as fit in one reply); "
            "every page is fetched either way",
        )

    context = command(
        "context",
        None,
        help="list, choose and show the named servers of the config file",
        description="Named servers (contexts) in the client's config file.",
        epilog=_contexts.CONTEXT_HELP,
    )
    if context is not None:
        _contexts.add_commands(context)

    completion = command(
        "completion",
        None,
        help="print a shell completion script",
        description="Print a script that completes jobmgr-client's commands, flags and job "
        "ids (from `jobmgr-client list -q`, for bash and zsh) in your shell.",
        epilog="examples:\n  jobmgr-client completion bash > /etc/bash_completion.d/jobmgr-client"
        "\n  jobmgr-client completion zsh > ~/.zfunc/_jobmgr-client",
    )
    if completion is not None:
        completion.add_argument("shell", choices=("bash", "zsh", "tcsh"), help="your shell")
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
  jobmgr-client start -f -- make test        # the same as `run`
"""
_RUN_DESCRIPTION = (
    "Start CMD with ARGS, stream its stdout and stderr to ours until it ends, and exit as it "
    "did. A dropped connection is taken up again where it left off. Ctrl-C detaches, leaving "
    "the job running, and says how to reattach (with --stop-on-interrupt it stops the job "
    "instead); SIGTERM or SIGHUP to the client, or our stdout closing (`| head -1`), stops "
    "the job first. Every ending other than the job exiting by itself is told in one line "
    "on stderr."
)
_RUN_EPILOG = """\
exit status:
  the job's own exit code           it exited by itself
  128 + N                           signal N ended it (137 SIGKILL, 143 SIGTERM)
  125                               jobmgr's error: usage, connection, refusal, LOST job
  126 / 127                         the command cannot be executed / is not found
  130                               Ctrl-C detached (the job goes on)
  141 / 143 / 129                   stdout closed / SIGTERM / SIGHUP: the job was stopped

examples:
  jobmgr-client run -- sh -c 'echo hello; exit 3'; echo $?     # hello, then 3
  jobmgr-client run --timeout 5m --memory 1G -- ./nightly.sh
  jobmgr-client run --stop-on-interrupt --grace 10s -- ./server --port 8080
"""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    word = _command_word(arguments)
    parser = build_parser(only=word)
    if word == "run":
        parser.usage_status = EXIT_JOBMGR  # type: ignore[attr-defined]
    args = parser.parse_args(arguments)
    following = args.command in ("start", "run") and args.follow
    status_on_error = EXIT_JOBMGR if following else EXIT_FAILED
    if args.command in ("start", "run"):
        args.argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not args.argv:
            return _usage(args, f"{args.command} needs a command, e.g. `jobmgr-client "
                          f"{args.command} -- ls -l /`",
                          EXIT_JOBMGR if following else EXIT_USAGE)  # fmt: skip
        if not following and (args.stop_on_interrupt or args.grace is not None):
            return _usage(args, "--stop-on-interrupt and --grace apply only with --follow "
                          "(or `run`)", EXIT_USAGE)  # fmt: skip
    from jobmgr.client._errors import JobmgrError

    if args.command == "completion":
        return _completion(args.shell)
    try:
        if args.command == "context":
            return _contexts.run(args)
        from jobmgr.client import Client

        client = Client.from_env(
            args.context, host=args.host, port=args.port, ca=args.ca, cert=args.cert, key=args.key
        )
    except JobmgrError as exc:
        return _fail(exc.message, status_on_error)
    with client:
        try:
            run: Command = args.run
            return run(client, args)
        except JobmgrError as exc:
            return _fail(exc.message, _error_status(exc) if following else EXIT_FAILED)
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            from ._follow import EXIT_BROKEN_PIPE, silence_stdout

            silence_stdout()  # a reader that went away (`| head`)
            return EXIT_BROKEN_PIPE


def _start(client: Client, args: argparse.Namespace) -> int:
    from ._jobflags import job_spec

    job_id = client.start(job_spec(args))
    if not args.follow:
        print(job_id)
        return 0
    from ._follow import follow

    return follow(
        client,
        job_id,
        stop_on_interrupt=args.stop_on_interrupt,
        grace=args.grace,
        reattach=_reattach(args),
    )


def _stop(client: Client, args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from jobmgr.client import JobState
    from jobmgr.client._errors import JobmgrError

    from . import _render

    def stop(job_id: str) -> str:
        try:
            status = client.stop(job_id, grace=args.grace)
        except JobmgrError as exc:
            return f"error: {exc.message}"
        if status.state is JobState.STOPPED:
            return f"stopped job {status.id}: {_render.outcome(status)}"
        return f"job {status.id} had already ended: {_render.outcome(status)}"

    failed = 0
    with ThreadPoolExecutor(max_workers=min(len(args.ids), 16)) as pool:
        for line in pool.map(stop, args.ids):  # in the order given, each as it ends
            failed += line.startswith("error: ")
            print(line, file=sys.stderr if line.startswith("error: ") else sys.stdout)
    return EXIT_FAILED if failed else 0


def _status(client: Client, args: argparse.Namespace) -> int:
    from . import _render

    jobs = [client.status(job_id) for job_id in args.ids]
    if args.json:
        import json

        shown = [_render.as_json(job) for job in jobs]
        print(json.dumps(shown[0] if len(shown) == 1 else shown, indent=2))
    else:
        print("\n\n".join(_render.summary(job) for job in jobs))
    return 0


def _output(client: Client, args: argparse.Namespace) -> int:
    from ._follow import Signalled, note, signals_raise, write

    reader = client.output(args.id, follow=not args.no_follow, tail=args.tail)
    with signals_raise():
        try:
            write(reader)
        except Signalled as signalled:
            reader.close()
            note(f"got a signal; job {reader.job_id} is left as it is")
            return 128 + signalled.signum
    return 0


def _list(client: Client, args: argparse.Namespace) -> int:
    from jobmgr.client._types import JobState

    from . import _render

    state = JobState.parse(args.state) if args.state else None
    jobs = client.list(state=state, owner=args.owner or "", page_size=args.page_size)
    if args.quiet:
        for job in jobs:
            print(job.id)
    elif args.json:
        import json

        print(json.dumps([_render.as_json(job) for job in jobs], indent=2))
    else:
        print(_render.table(jobs))
    return 0


# Shell functions that complete a job id from the ids `list -q` prints.
_COMPLETE_IDS = {
    "bash": '_jobmgr_client_ids() { compgen -W "$(jobmgr-client list -q 2>/dev/null)" -- "$1"; }',
    "zsh": '_jobmgr_client_ids() { compadd -- ${(f)"$(jobmgr-client list -q 2>/dev/null)"} }',
}


def _job_ids(action: argparse.Action) -> None:
    """Complete this argument with the server's job ids (see _completion)."""
    action.complete = {"bash": "_jobmgr_client_ids", "zsh": "_jobmgr_client_ids"}  # type: ignore[attr-defined]


def _completion(shell: str) -> int:
    """Print the completion script: shtab writes it from the parser once, so completing costs
    no Python start per key press, and nothing here runs on the other commands' path."""
    import shtab

    print(shtab.complete(build_parser(), shell, preamble=_COMPLETE_IDS.get(shell, "")))
    return 0


def _error_status(error: Exception) -> int:
    """run's exit status for a jobmgr error: 127 and 126 as a shell gives them, else 125."""
    from jobmgr.client._errors import CommandNotFound, NotExecutable

    if isinstance(error, CommandNotFound):
        return 127
    if isinstance(error, NotExecutable):
        return 126
    return EXIT_JOBMGR


def _reattach(args: argparse.Namespace) -> str:
    """The command line that reaches the same server, for the hint after a detach."""
    import shlex

    words = ["jobmgr-client"]
    for name in CONNECTION_FLAGS:
        value = getattr(args, name)
        if value is not None:
            words += [f"--{name}", str(value)]
    return shlex.join(words)


def _command_word(arguments: Sequence[str]) -> str | None:
    """The command named in ``arguments``, skipping the global flags and their values."""
    takes_value = {f"--{name}" for name in CONNECTION_FLAGS}
    words = iter(arguments)
    for word in words:
        if word in takes_value:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _number_of(what: str, bits: int) -> Callable[[str], int]:
    """An argparse type: a whole number of ``what`` that fits the field's ``bits``."""

    def parse(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what}")
        if int(text) >= 2**bits:
            raise argparse.ArgumentTypeError(f"{text} {what} is more than the server takes")
        return int(text)

    return parse


def _usage(args: argparse.Namespace, message: str, status: int) -> int:
    print(f"jobmgr-client {args.command}: error: {message}", file=sys.stderr)
    return status


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
