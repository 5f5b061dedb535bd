"""A job that passes its output cap at once still reads truncated, even on a busy host.

The launcher may read such a job's first output before its init reports the start; the news
of the truncation must then wait for the start reply, or the worker, which learns of the job
from that reply, drops it. On a host kept busy by four spinning processes, 18 of 100 such
starts lost it before the news waited.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator

import pytest

from harness.poll import wait_until
from jobmgr.worker import JobSpec, Worker
from steps.fixtures_worker import MakeWorker

CAP = 64 * 1024
STARTS = 30


@pytest.fixture
def busy_host() -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    yield
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def test_output_past_the_cap_at_once_reads_truncated(
    busy_host: None, make_worker: MakeWorker
) -> None:
    worker, _ = make_worker(output_cap=CAP)
    missed = []
    for _ in range(STARTS):
        job = worker.start(JobSpec(["sh", "-c", "head -c 1048576 /dev/zero; exec sleep 60"]))
        if not wait_until(functools.partial(_reads_truncated, worker, job), 3):
            missed.append(job)
        worker.stop(job, 0.1)
    assert missed == [], f"{len(missed)} of {STARTS} jobs past the cap do not read truncated"


def _reads_truncated(worker: Worker, job: str) -> bool:
    return worker.status(job).output_truncated
