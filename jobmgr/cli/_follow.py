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

How it ended is the last line on stderr, in the one form _ending describes (``--quiet``
leaves it out when the job ended by itself). Whoever takes our stdout away or terminates us
ends the job too, as ssh does on a hangup: the job's output has nowhere left to go, and a job
nobody follows any more should not run on unseen. Ctrl-C is a person's choice and detaches,
unless ``--stop-on-interrupt``. A stopped job's last output (what it wrote in its grace
period) is printed before the ending, except when stdout is what went away.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import IO, TYPE_CHECKING

from jobmgr.client._client import Client, OutputReader
from jobmgr.client._errors import ConnectionFailed, JobmgrError
from jobmgr.client._types import JobStatus, Stream

from . import _ending

if TYPE_CHECKING:
    from ._timestamps import Stamper

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


def write(reader: OutputReader, stamper: Stamper | None = None) -> None:
    """Copy the job's output to our stdout and stderr as it comes, each line after its
    capture time with a ``stamper``; BrokenPipeError if our stdout (or stderr) is closed."""
    sinks: dict[Stream, IO[bytes]] = {
        Stream.STDOUT: sys.stdout.buffer,
        Stream.STDERR: sys.stderr.buffer,
    }
    for chunk in reader:
        sinks[chunk.stream].write(chunk.data if stamper is None else stamper.stamp(chunk))
        sinks[chunk.stream].flush()
        _ending.last_bytes[chunk.stream.name.lower()] = chunk.data[-1:]
    if stamper is not None and stamper.untimed:
        note(
            "lines shown after '-' have no capture time: a jobmgr-server without capture "
            "times logged them"
        )
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
    quiet: bool = False,
) -> int:
    """Stream the job's output until it ends, tell how it ended (see _ending), and return
    the exit status (see the module docstring). ``reattach`` is the command line that
    reaches the server again."""
    again = f"{reattach} output {job_id}"
    try:
        return _follow(client, job_id, stop_on_interrupt, grace, reattach, quiet)
    except JobmgrError as exc:  # the server lost for longer than we wait, or the stream broke
        status = None if isinstance(exc, ConnectionFailed) else _status(client, job_id)
        if status is not None and status.ended:  # its output is incomplete: say so, then how
            note(exc.message)
            _ending.ended(status)
            return exit_status(status)
        _ending.tell(
            job_id, "unknown, may still be running", f"{exc.message}; read it with: {again}"
        )
        return EXIT_JOBMGR
    except KeyboardInterrupt:  # a second one, while the job was being stopped
        _ending.tell(
            job_id, "unknown, may still be running", f"interrupted again; read it with: {again}"
        )
        return EXIT_INTERRUPTED


def _follow(
    client: Client,
    job_id: str,
    stop_on_interrupt: bool,
    grace: float | None,
    reattach: str,
    quiet: bool,
) -> int:
    reader = client.output(job_id)
    with signals_raise():
        try:
            write(reader)
        except KeyboardInterrupt:
            reader.close()
            if not stop_on_interrupt:
                _ending.tell(
                    job_id,
                    "detached, still running",
                    f"reattach with: {reattach} output {job_id}   (stop it with: {reattach} "
                    f"stop {job_id})",
                )
                return EXIT_INTERRUPTED
            note(f"interrupted: stopping job {job_id}")
            return _stop_and_finish(client, reader, grace, "Ctrl-C (--stop-on-interrupt)")
        except Signalled as signalled:
            reader.close()
            name = signal.Signals(signalled.signum).name
            note(f"got {name}: stopping job {job_id}")
            _stop_and_finish(client, reader, grace, f"jobmgr-client got {name}")
            return 128 + signalled.signum
        except BrokenPipeError:
            reader.close()
            silence_stdout()
            note(f"stdout was closed (its reader went away): stopping job {job_id}")
            _ending.ended(client.stop(job_id, grace=grace), why="stdout was closed")
            return EXIT_BROKEN_PIPE
    assert reader.status is not None
    _ending.ended(reader.status, quiet=quiet)
    return exit_status(reader.status)


def _status(client: Client, job_id: str) -> JobStatus | None:
    try:
        return client.status(job_id)
    except JobmgrError:
        return None


def _stop_and_finish(client: Client, reader: OutputReader, grace: float | None, why: str) -> int:
    """Stop the job, print what it wrote meanwhile, tell how it ended; its exit status."""
    client.stop(reader.job_id, grace=grace)
    rest = client.output(reader.job_id, offset=reader.offset)
    try:
        write(rest)
    except BrokenPipeError:
        silence_stdout()
    assert rest.status is not None
    _ending.ended(rest.status, why=why)
    return exit_status(rest.status)


def exit_status(status: JobStatus) -> int:
    """The job's exit status; 125 for one that has none (LOST)."""
    code = status.exit_status
    return EXIT_JOBMGR if code is None else code
