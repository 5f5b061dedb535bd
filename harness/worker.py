"""Following the jobs of a ``jobmgr.worker.Worker`` driven in this process."""

from __future__ import annotations

import time

from jobmgr.worker import JobStatus, Stream, Worker

from .speed import scaled


def wait_until_ended(worker: Worker, job_id: str, timeout: float = 60.0) -> JobStatus:
    """Follow the job's output to its end (no polling) within ``timeout`` (scaled), then
    return its final status."""
    deadline = time.monotonic() + scaled(timeout)
    for _ in worker.output(job_id):
        assert time.monotonic() < deadline, "the job did not end in time"
    status = worker.status(job_id)
    assert status.terminated, f"output ended but the job is {status.state}"
    return status


def collected(worker: Worker, job_id: str, *, follow: bool = True) -> dict[Stream, bytes]:
    """The job's output joined per stream (to its end when following)."""
    out: dict[Stream, bytes] = {Stream.STDOUT: b"", Stream.STDERR: b""}
    for chunk in worker.output(job_id, follow=follow):
        out[chunk.stream] += chunk.data
    return out


def wait_for_output(worker: Worker, job_id: str, text: bytes) -> None:
    """Follow the job's output until it has printed ``text``; fail if it ends first."""
    printed = b""
    for chunk in worker.output(job_id):
        printed += chunk.data
        if text in printed:
            return
    raise AssertionError(f"the job ended without printing {text!r}: {printed[-500:]!r}")
