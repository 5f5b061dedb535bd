"""Steps for features/cgroups.feature."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from jobmgr.worker import JobSpec, JobState, Limits, Mount, Sandbox, Worker

from .fixtures_worker import MiB, cgroup_dirs, wait_until_ended

scenarios("cgroups.feature")

HIERARCHIES = ("cpu", "cpuacct", "memory", "blkio", "pids", "devices")


HOG_128_MIB = "x = bytearray(128 * 1024 * 1024); print('survived', flush=True)"

# Mounts cgroupfs in the job's own mount namespace (v2 if the job's /proc/self/cgroup says so),
# tries to write an unlimited value into every memory limit file it finds there, says how
# many writes went through, then allocates 128 MiB.
LIFT_LIMITS = f"""
import os, subprocess
v2 = open("/proc/self/cgroup").read().startswith("0::")
kind = ["-t", "cgroup2"] if v2 else ["-t", "cgroup", "-o", "memory"]
mounted = subprocess.run(["mount", *kind, "cgroup", "/mnt"]).returncode == 0
print("mounted", mounted, flush=True)
names = {{"memory.max": "max", "memory.swap.max": "max",
         "memory.memsw.limit_in_bytes": "-1", "memory.limit_in_bytes": "-1"}}
lifted = 0
for top, _, files in os.walk("/mnt"):
    for name in sorted(files, key=lambda n: "memsw" not in n):
        if name in names:
            try:
                with open(os.path.join(top, name), "w") as f:
                    f.write(names[name])
                lifted += 1
            except OSError:
                pass
print("lifted", lifted, flush=True)
{HOG_128_MIB}
"""


@when(
    parsers.parse(
        'I start a job whose shell runs "{background}" in the background and then a python3 '
        "allocating 128 MiB, with a memory limit of {mib:d} MiB"
    )
)
def _oom_in_one_process(worker: Worker, ctx: dict[str, Any], background: str, mib: int) -> None:
    script = f'{background} & python3 -c "{HOG_128_MIB}"; wait'
    ctx["job"] = worker.start(JobSpec(["sh", "-c", script], limits=Limits(memory_bytes=mib * MiB)))


@when(
    parsers.parse(
        'I start, as root, a job that mounts the cgroup filesystem, writes "max" to every '
        "memory limit it finds there, then allocates 128 MiB, with a memory limit of {mib:d} MiB"
    )
)
def _lift_limits(worker: Worker, ctx: dict[str, Any], mib: int) -> None:
    limits = Limits(memory_bytes=mib * MiB)
    ctx["job"] = worker.start(JobSpec(["python3", "-c", LIFT_LIMITS], limits=limits, run_as="root"))


@then(parsers.parse("within {seconds:d} seconds the job ends, FAILED by signal {signo:d}"))
def _ends_killed(worker: Worker, ctx: dict[str, Any], seconds: int, signo: int) -> None:
    deadline = time.monotonic() + seconds
    while not (status := worker.status(ctx["job"])).terminated and time.monotonic() < deadline:
        time.sleep(0.1)
    said = b"".join(chunk.data for chunk in worker.output(ctx["job"], follow=False))
    assert (status.state, status.signal) == (JobState.FAILED, signo), (status, said)


@then("the OOM killer is reported")
def _oom(worker: Worker, ctx: dict[str, Any]) -> None:
    status = worker.status(ctx["job"])
    assert status.oom_killed, status


@then(
    parsers.parse("over {seconds:g} seconds it uses at most {share:g} CPU-seconds per wall second")
)
def _cpu_share(worker: Worker, ctx: dict[str, Any], seconds: float, share: float) -> None:
    time.sleep(0.5)  # let the loop get going
    before, t0 = worker.status(ctx["job"]).cpu_seconds, time.monotonic()
    time.sleep(seconds)
    after, t1 = worker.status(ctx["job"]).cpu_seconds, time.monotonic()
    used = (after - before) / (t1 - t0)
    worker.stop(ctx["job"], grace=1)
    assert 0.05 < used <= share, used


def _pids_file(parent: str, job_id: str) -> Path:
    return Path(f"/sys/fs/cgroup/pids/{parent}/{job_id}/cgroup.procs")


@then(parsers.parse("the job's cgroup holds at most {count:d} processes"))
def _pids_held(worker: Worker, ctx: dict[str, Any], cgroup_parent: str, count: int) -> None:
    status = worker.status(ctx["job"])
    assert not status.terminated, (status, list(worker.output(ctx["job"]))[-5:])
    current = Path(f"/sys/fs/cgroup/pids/{cgroup_parent}/{ctx['job']}/pids.current")
    assert int(current.read_text()) <= count
    events = Path(f"/sys/fs/cgroup/pids/{cgroup_parent}/{ctx['job']}/pids.events")
    assert int(events.read_text().split()[1]) > 0, "the limit was never hit"


@then("another job still starts and exits 0")
def _another(worker: Worker) -> None:
    other = worker.start(JobSpec(["true"]))
    assert wait_until_ended(worker, other, timeout=10).exit_code == 0


@then(
    parsers.parse(
        "stopping the fork bomb with a grace period of {grace:g} second "
        "takes at most {most:g} seconds"
    )
)
def _stop_bomb(worker: Worker, ctx: dict[str, Any], grace: float, most: float) -> None:
    began = time.monotonic()
    worker.stop(ctx["job"], grace=grace)
    assert time.monotonic() - began <= most


@pytest.fixture
def io_dir() -> Iterator[Path]:
    """A directory on the root filesystem, which jobs may mount writable: blkio throttles real
    disks, and a job's own files are on a tmpfs."""
    path = Path("/var/tmp") / f"jobmgr-test-io-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    os.chmod(path, 0o777)  # for the job, running as nobody
    assert os.stat(path).st_dev == os.stat("/").st_dev
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def worker_sandbox(io_dir: Path) -> Sandbox:
    return Sandbox(mount_sources=(f"{io_dir}:rw",))


def start_on_disk(worker: Worker, ctx: dict[str, Any], argv: list[str], limits: Limits) -> None:
    """Start ``argv`` as nobody with the test's directory on the root filesystem at /io."""
    io_dir = ctx["io_dir"]
    mount = Mount(str(io_dir), "/io", writable=True)
    ctx["job"] = worker.start(JobSpec(argv, limits=limits, run_as="nobody", mounts=[mount]))


@when(
    parsers.parse(
        "I start a dd writing {size:d} MiB with oflag=direct to the root filesystem "
        "with an IO write limit of {rate:d} MiB/s"
    )
)
def _dd_write(worker: Worker, ctx: dict[str, Any], io_dir: Path, size: int, rate: int) -> None:
    ctx["io_dir"] = io_dir
    argv = ["dd", "if=/dev/zero", "of=/io/written", "bs=1M", f"count={size}", "oflag=direct"]
    start_on_disk(worker, ctx, argv, Limits(io_write_bps=rate * MiB))


@given(parsers.parse("a {size:d} MiB file on the root filesystem"), target_fixture="io_file")
def _io_file(io_dir: Path, size: int) -> Path:
    path = io_dir / "read"
    with open(path, "wb") as f:
        f.write(os.urandom(MiB) * size)
        f.flush()
        os.fsync(f.fileno())
    return path


@when(
    parsers.parse(
        "I start a dd reading it with iflag=direct with an IO read limit of {rate:d} MiB/s"
    )
)
def _dd_read(worker: Worker, ctx: dict[str, Any], io_file: Path, rate: int) -> None:
    ctx["io_dir"] = io_file.parent
    argv = ["dd", f"if=/io/{io_file.name}", "of=/dev/null", "bs=1M", "iflag=direct"]
    start_on_disk(worker, ctx, argv, Limits(io_read_bps=rate * MiB))


@then(parsers.parse("the job ran for at least {seconds:g} seconds"))
def _ran_for(worker: Worker, ctx: dict[str, Any], seconds: float) -> None:
    status = worker.status(ctx["job"])
    assert status.ended_at is not None
    assert status.ended_at - status.started_at >= seconds, status


@then("the job has a cgroup in every hierarchy")
def _has_cgroups(ctx: dict[str, Any], cgroup_parent: str) -> None:
    found = {Path(d).parent.parent.name for d in cgroup_dirs(cgroup_parent, ctx["job"])}
    assert set(HIERARCHIES) <= found, found


@then("no cgroup of the job is left")
def _no_cgroups(ctx: dict[str, Any], cgroup_parent: str) -> None:
    assert cgroup_dirs(cgroup_parent, ctx["job"]) == []
