"""Following a job: its output to our stdout and stderr, then its ending as our exit status.

``jobmgr-client run`` (``start --follow``) behaves like the job itself, the way
``systemd-run --wait --pipe`` does: the job's stdout and stderr come out on ours, byte for
byte, and the client exits with the job's exit code, or 128 + the signal that killed it (so a
job stopped by SIGKILL gives 137, as in a shell). Ctrl-C detaches and leaves the job running;
with ``--stop-on-interrupt`` it stops the job instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO

from google.protobuf.duration_pb2 import Duration

from jobmgr.api import job_pb2, job_pb2_grpc

from ._render import ended, exited, outcome

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C'd command
EXIT_NO_STATUS = 1  # the job was lost: there is no exit code or signal to report


def note(message: str) -> None:
    """A line of our own on stderr, told apart from the job's stderr by its prefix."""
    print(f"jobmgr-client: {message}", file=sys.stderr, flush=True)


def write_output(messages: Iterable[job_pb2.OutputResponse]) -> bool:
    """Write each message's bytes to our stdout or stderr as the job wrote them; returns
    whether the server said the output was truncated."""
    stdout, stderr = sys.stdout.buffer, sys.stderr.buffer
    truncated = False
    for message in messages:
        truncated = truncated or message.truncated
        if message.output:
            sink: IO[bytes] = stderr if message.stream == job_pb2.STREAM_STDERR else stdout
            sink.write(message.output)
            sink.flush()
    if truncated:
        note(
            "the job's output was truncated (the server's output cap was reached, or its "
            "disk was full): only what was kept is shown"
        )
    return truncated


def exit_status(job: job_pb2.StatusResponse) -> int:
    """The exit status a shell would give for the job: its code, or 128 + its signal."""
    if exited(job):
        return job.exit_code
    if job.signal:
        return 128 + job.signal
    return EXIT_NO_STATUS


def follow(
    stub: job_pb2_grpc.JobManagerStub,
    job_id: str,
    *,
    stop_on_interrupt: bool = False,
    grace: Duration | None = None,
) -> int:
    """Stream the job's output until it ends; return its exit status (see exit_status)."""
    try:
        write_output(stub.Output(job_pb2.OutputRequest(uuid=job_id)))
    except KeyboardInterrupt:
        if not stop_on_interrupt:
            note(
                f"detached; job {job_id} is still running. Reattach with: "
                f"jobmgr-client output {job_id}   (stop it with: jobmgr-client stop {job_id})"
            )
            return EXIT_INTERRUPTED
        note(f"interrupted: stopping job {job_id}")
        stopped = stub.Stop(job_pb2.StopRequest(uuid=job_id, grace=grace)).job
        note(f"job {job_id} {outcome(stopped)}")
        return exit_status(stopped)
    job = stub.Status(job_pb2.StatusRequest(uuid=job_id))
    if not ended(job):
        # The server stopped sending (it is shutting down, or lost the job's supervisor).
        note(
            f"the output stream ended, but job {job_id} still runs; reattach with: "
            f"jobmgr-client output {job_id}"
        )
        return EXIT_NO_STATUS
    if job.state != job_pb2.JOB_STATE_EXITED:  # stopped, failed or lost: say how
        why = f" ({job.reason})" if job.reason else ""
        note(f"job {job_id} {outcome(job)}{why}")
    return exit_status(job)
