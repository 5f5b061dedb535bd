"""Following a job: its output to our stdout and stderr, then its ending as our exit status.

``jobmgr-client run`` behaves like the job itself, as ``docker run`` does: the job's stdout
and stderr come out on ours, byte for byte, and the exit status is the job's:

    its exit code        the job exited by itself (0-255)
    128 + N              signal N ended it (137 for SIGKILL, 143 for SIGTERM)
    125                  jobmgr failed: a usage error, the server unreachable or lost for good,
                         a refusal (role, limits, user), or the job LOST with no status
    126, 127             the command cannot be executed, or is not found
    130                  Ctrl-C detached from the job, which goes on running
    141, 143, 129        our stdout was closed (SIGPIPE), or we got SIGTERM or SIGHUP:
                         the job was stopped first

How it ends is told on stderr in one line starting ``jobmgr-client:``, unless the job simply
exited (its own status says it). Whoever takes our stdout away or terminates us ends the job
too, as ssh does on a hangup: the job's output has nowhere left to go, and a job nobody
follows any more should not run on unseen. Ctrl-C is a person's choice and detaches, unless
``--stop-on-interrupt``. A stopped job's last output (what it wrote in its grace period) is
printed before the ending, except when stdout is what went away.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import IO

from jobmgr.client._client import Client, OutputReader
from jobmgr.client._errors import ConnectionFailed
from jobmgr.client._types import JobState, JobStatus, Stream

from ._render import outcome

EXIT_JOBMGR = 125  # jobmgr's own failure, as docker run's 125
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C'd command
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def note(message: str) -> None:
    """A line of our own on stderr, told apart from the job's stderr by its prefix."""
    print(f"jobmgr-client: {message}", file=sys.stderr, flush=True)


class Signalled(BaseException):
    """SIGTERM or SIGHUP arrived (raised where the main thread is, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Signalled; a second one acts as usual."""

    def raise_signalled(signum: int, _frame: FrameType | None) -> None:
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        raise Signalled(signum)

    before = {n: signal.signal(n, raise_signalled) for n in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def write(reader: OutputReader) -> None:
    """Copy the job's output to our stdout and stderr as it comes; BrokenPipeError if our
    stdout (or stderr) is closed."""
    sinks: dict[Stream, IO[bytes]] = {
        Stream.STDOUT: sys.stdout.buffer,
        Stream.STDERR: sys.stderr.buffer,
    }
    for chunk in reader:
        sinks[chunk.stream].write(chunk.data)
        sinks[chunk.stream].flush()
    if reader.truncated:
        note(
            "the job's output was truncated (the server's output cap was reached, or its "
            "disk was full): only what was kept is shown"
        )


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone, so that the flush at exit does
    not fail again (as the Python docs advise for SIGPIPE)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def follow(
    client: Client,
    job_id: str,
    *,
    stop_on_interrupt: bool,
    grace: float | None,
    reattach: str,
) -> int:
    """Stream the job's output until it ends; return the exit status (see the module
    docstring). ``reattach`` is the command line that reads the job's output again."""
    reader = client.output(job_id)
    with signals_raise():
        try:
            write(reader)
        except KeyboardInterrupt:
            reader.close()
            if not stop_on_interrupt:
                note(
                    f"detached; job {job_id} is still running. Reattach with: "
                    f"{reattach} output {job_id}   (stop it with: {reattach} stop {job_id})"
                )
                return EXIT_INTERRUPTED
            note(f"interrupted: stopping job {job_id}")
            return _stop_and_finish(client, reader, grace)
        except Signalled as signalled:
            reader.close()
            name = signal.Signals(signalled.signum).name
            note(f"got {name}: stopping job {job_id}")
            _stop_and_finish(client, reader, grace)
            return 128 + signalled.signum
        except ConnectionFailed as exc:  # lost for longer than the client waits
            print(f"error: {exc.message}", file=sys.stderr)
            note(
                f"job {job_id} may still be running; read it again with: {reattach} output {job_id}"
            )
            return EXIT_JOBMGR
        except BrokenPipeError:
            reader.close()
            silence_stdout()
            note(f"stdout was closed (its reader went away): stopping job {job_id}")
            status = client.stop(job_id, grace=grace)
            note(f"job {job_id} {outcome(status)}")
            return EXIT_BROKEN_PIPE
    assert reader.status is not None
    return ending(reader.status)


def _stop_and_finish(client: Client, reader: OutputReader, grace: float | None) -> int:
    """Stop the job, print what it wrote meanwhile, and return its exit status."""
    client.stop(reader.job_id, grace=grace)
    rest = client.output(reader.job_id, offset=reader.offset)
    try:
        write(rest)
    except BrokenPipeError:
        silence_stdout()
    assert rest.status is not None
    return ending(rest.status, always=True)


def ending(status: JobStatus, *, always: bool = False) -> int:
    """Say how the job ended (unless it simply exited and ``always`` is off); its exit status."""
    if status.state is not JobState.EXITED or always:
        why = f" ({status.reason})" if status.reason else ""
        note(f"job {status.id} {outcome(status)}{why}")
    code = status.exit_status
    return EXIT_JOBMGR if code is None else code
