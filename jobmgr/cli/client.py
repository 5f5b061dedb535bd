"""jobmgr-client: start, follow, stop, inspect, list and read jobs on a jobmgr server.

Exit status: 0 done; 1 an error (one line on stderr, ``error: ...``); 2 a usage error. ``run``
(and ``start --follow``) exits as the job did instead, with 125 for jobmgr's own errors,
usage errors included (see _follow), and its last line on stderr says how the job ended,
or why none started (see _ending). Built on jobmgr.client; a command imports only what it
needs (``context`` loads no grpc), since most of a short command's time is imports.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

# Before grpc is imported, or its C core prints log lines of its own on stderr, around our
# one-line errors. GRPC_VERBOSITY=DEBUG in the environment still turns them on.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from . import _contexts
from ._arguments import (
    COMPLETE_IDS,
    CONNECTION_FLAGS,
    EXIT_JOBMGR,
    EXIT_USAGE,
    build_parser,
    command_word,
)

if TYPE_CHECKING:
    from jobmgr.client import Client
    from jobmgr.client._errors import JobmgrError

EXIT_FAILED = 1

Command = Callable[["Client", argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    word = command_word(arguments)
    parser = build_parser(only=word)
    if word == "run":
        parser.usage_status = EXIT_JOBMGR  # type: ignore[attr-defined]
    args = parser.parse_args(arguments)
    following = args.command in ("start", "run") and args.follow
    if args.command in ("start", "run"):
        args.argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not args.argv:
            return _usage(args, f"{args.command} needs a command, e.g. `jobmgr-client "
                          f"{args.command} -- ls -l /`",
                          EXIT_JOBMGR if following else EXIT_USAGE)  # fmt: skip
        if not following and (args.stop_on_interrupt or args.quiet or args.grace is not None):
            return _usage(args, "--stop-on-interrupt, --quiet and --grace apply only with "
                          "--follow (or `run`)", EXIT_USAGE)  # fmt: skip
    from jobmgr.client._errors import JobmgrError

    if args.command == "completion":
        return _completion(args.shell)
    try:
        if args.command == "context":
            return _contexts.run(args)
        from jobmgr.client import Client

        client = Client.from_env(
            args.context,
            host=args.host,
            port=args.port,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            reconnect_for=args.reconnect_for,
        )
    except JobmgrError as exc:
        return _not_started(exc) if following else _fail(exc.message, EXIT_FAILED)
    with client:
        try:
            run: Command = COMMANDS[args.run]
            return run(client, args)
        except JobmgrError as exc:  # following, only the start's: follow tells the rest
            return _not_started(exc) if following else _fail(exc.message, EXIT_FAILED)
        except KeyboardInterrupt:
            if following:
                from . import _ending

                _ending.tell("", "unknown, may still be running", "interrupted while it "
                             "started; see `jobmgr-client list`")  # fmt: skip
            return 130
        except BrokenPipeError:
            from ._follow import EXIT_BROKEN_PIPE, silence_stdout

            silence_stdout()  # a reader that went away (`| head`)
            return EXIT_BROKEN_PIPE


def _start(client: Client, args: argparse.Namespace) -> int:
    from ._jobflags import job_spec

    if not args.follow:
        print(client.start(job_spec(args)))
        return 0
    from . import _ending
    from ._follow import Signalled, follow, signals_raise

    try:
        with signals_raise():
            job_id = client.start(job_spec(args))
    except Signalled as signalled:  # no id yet: the job, if it started, is left as it is
        import signal

        name = signal.Signals(signalled.signum).name
        _ending.tell("", "unknown, may still be running", f"got {name} while it started; see "
                     "`jobmgr-client list`")  # fmt: skip
        return 128 + signalled.signum
    return follow(
        client,
        job_id,
        stop_on_interrupt=args.stop_on_interrupt,
        grace=args.grace,
        reattach=_reattach(args),
        quiet=args.quiet,
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

    reader = client.output(args.id, follow=not args.no_follow, tail=args.tail, since=args.since)
    stamper = None
    if args.timestamps:
        from ._timestamps import Stamper

        stamper = Stamper()
    with signals_raise():
        try:
            write(reader, stamper)
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


# What each command's ``run`` default (see _arguments) names.
COMMANDS: dict[str, Command] = {
    "start": _start,
    "run": _start,
    "stop": _stop,
    "status": _status,
    "output": _output,
    "list": _list,
}


def _completion(shell: str) -> int:
    """Print the completion script: shtab writes it from the parser once, so completing costs
    no Python start per key press, and nothing here runs on the other commands' path."""
    import shtab

    print(shtab.complete(build_parser(), shell, preamble=COMPLETE_IDS.get(shell, "")))
    return 0


def _not_started(error: JobmgrError) -> int:
    """run's ending when no job was made; its exit status: 127 and 126 as a shell gives
    them, else 125."""
    from jobmgr.client._errors import CommandNotFound, NotExecutable

    from . import _ending

    _ending.not_started(error.message)
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


def _usage(args: argparse.Namespace, message: str, status: int) -> int:
    print(f"jobmgr-client {args.command}: error: {message}", file=sys.stderr)
    return status


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
