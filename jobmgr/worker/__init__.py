"""jobmgr.worker: start, stop, query and follow contained Linux jobs. No gRPC in here.

    with Worker(state_dir="/var/lib/jobmgr") as worker:
        job_id = worker.start(JobSpec(["sh", "-c", "echo hi"]))
        for chunk in worker.output(job_id):      # from byte 0, following until the job ends
            print(chunk.stream.name, chunk.data)
        print(worker.status(job_id).exit_code)

Every method is thread-safe; ``astart``/``astop``/``astatus``/``aoutput`` are the asyncio forms.
"""

from ._confinement import Sandbox
from ._errors import (
    CapacityError,
    CommandNotFound,
    DeadlineExceeded,
    InvalidSpec,
    JobNotFound,
    LaunchError,
    NotExecutable,
    OffsetPastEnd,
    OutputIncomplete,
    WorkerError,
    WorkerUnavailable,
)
from ._jobtable import Retention
from ._spec import DEFAULT_ENV, DEFAULT_LIMITS, UNLIMITED, JobSpec, Limits, Mount
from ._status import JobState, JobStatus, OutputChunk, Stream
from ._worker import Worker

__all__ = [
    "DEFAULT_ENV",
    "DEFAULT_LIMITS",
    "UNLIMITED",
    "CapacityError",
    "CommandNotFound",
    "DeadlineExceeded",
    "InvalidSpec",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LaunchError",
    "Limits",
    "Mount",
    "NotExecutable",
    "OffsetPastEnd",
    "OutputChunk",
    "OutputIncomplete",
    "Retention",
    "Sandbox",
    "Stream",
    "Worker",
    "WorkerError",
    "WorkerUnavailable",
]
