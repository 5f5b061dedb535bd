"""jobmgr-client's command line: the parser, its help texts and the types of its values.

Building every command's arguments is a tenth of a short command's time, so ``build_parser``
builds only the one command asked for (the others are still listed). Each command's ``run``
default names the function of jobmgr.cli.client that carries it out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from jobmgr.cli import HelpFormatter, add_version_flag

from . import _contexts

EXIT_USAGE, EXIT_JOBMGR = 2, 125
RECONNECT_FOR = 120.0  # seconds, as jobmgr.client's default (not imported: it loads grpc)
STATES = ("running", "exited", "stopped", "failed", "lost")
CONNECTION_FLAGS = ("context", "host", "port", "ca", "cert", "key")

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
    parser.add_argument(
        "--reconnect-for",
        type=_duration,
        default=RECONNECT_FOR,
        metavar="DURATION",
        help="how long run and output try to get a dropped connection back before they give "
        "up (default: %(default)gs)",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(
        name: str, run: str | None, *, help: str, description: str, epilog: str
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
            "start",
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
        start.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="while following, leave out the ending line on stderr when the job ends by "
            "itself (it exits, or a signal of its own kills it), so that a script parsing "
            "stderr gets only the job's; every other ending is still told",
        )
        add_grace_flag(start, what="following ends by stopping the job")
        add_job_flags(start)
        start.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")

    stop = command(
        "stop",
        "stop",
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
        "status",
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
        "output",
        help="print a job's output",
        description="Print a job's output from its start, following it until the job ends: "
        "its stdout to stdout and its stderr to stderr, byte for byte. A connection that "
        "drops is taken up again where it left off, so no byte is lost or repeated.",
        epilog="examples:\n  jobmgr-client output 3f2b\n  jobmgr-client output --no-follow "
        "3f2b > job.log\n  jobmgr-client output --tail 50 3f2b\n  jobmgr-client output -t "
        "--since 10m 3f2b     # the last 10 minutes, each line after its time",
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
        where_from = output.add_mutually_exclusive_group()
        where_from.add_argument(
            "--tail",
            type=_number_of("lines", 63),
            metavar="N",
            help="start from the last N lines, not the first byte",
        )
        from ._timestamps import since

        where_from.add_argument(
            "--since",
            type=since,
            metavar="DURATION|TIME",
            help="start from what the server captured DURATION ago (30s, 5m, 1h30m) or "
            "since an RFC 3339 TIME (2026-01-02T15:04:05Z); output an older server logged "
            "without capture times is left out",
        )
        output.add_argument(
            "-t",
            "--timestamps",
            action="store_true",
            help="put before each line the time the server captured it, RFC 3339 UTC "
            "(2026-01-02T15:04:05.123456Z), like docker logs -t; '-' for none",
        )

    listing = command(
        "list",
        "list",
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
    "the job first. However it ends, the last line on stderr says so: `jobmgr-client: job "
    "ID HOW[: WHY]`, e.g. `jobmgr-client: job 3f2b8c9e exited with code 3` (see below)."
)
_RUN_EPILOG = """\
exit status:
  the job's own exit code           it exited by itself
  128 + N                           signal N ended it (137 SIGKILL, 143 SIGTERM)
  125                               jobmgr's error: usage, connection, refusal, LOST job
  126 / 127                         the command cannot be executed / is not found
  130                               Ctrl-C detached (the job goes on)
  141 / 143 / 129                   stdout closed / SIGTERM / SIGHUP: the job was stopped

the last line on stderr: jobmgr-client: job ID HOW[: WHY], HOW one of
  exited with code N                it ended by itself     } -q leaves these two out,
  killed by signal N (NAME)         a signal of its own    } for scripts that parse stderr
  OOM-killed by signal 9 (SIGKILL)  it outgrew --memory
  stopped by signal N (NAME)        a stop, its --timeout, or we stopped it (WHY says)
  stopped, exited with code N       it exited on the stop's SIGTERM
  lost                              its supervisor died (WHY says more)
  failed to start                   no ID: not found, not executable, refused, ...
  detached, still running           Ctrl-C (WHY: how to reattach)
  unknown, may still be running     the server stayed away longer than we wait

examples:
  jobmgr-client run -- sh -c 'echo hello; exit 3'; echo $?     # hello, then 3
  jobmgr-client run --timeout 5m --memory 1G -- ./nightly.sh
  jobmgr-client run --stop-on-interrupt --grace 10s -- ./server --port 8080
"""


COMPLETE_IDS = {
    "bash": '_jobmgr_client_ids() { compgen -W "$(jobmgr-client list -q 2>/dev/null)" -- "$1"; }',
    "zsh": '_jobmgr_client_ids() { compadd -- ${(f)"$(jobmgr-client list -q 2>/dev/null)"} }',
}


def _job_ids(action: argparse.Action) -> None:
    """Complete this argument with the server's job ids (see _completion)."""
    action.complete = {"bash": "_jobmgr_client_ids", "zsh": "_jobmgr_client_ids"}  # type: ignore[attr-defined]


def command_word(arguments: Sequence[str]) -> str | None:
    """The command named in ``arguments``, skipping the global flags and their values."""
    takes_value = {f"--{name}" for name in CONNECTION_FLAGS} | {"--reconnect-for"}
    words = iter(arguments)
    for word in words:
        if word in takes_value:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _duration(text: str) -> float:
    from ._units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
