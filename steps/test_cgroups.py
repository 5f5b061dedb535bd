"""Steps for features/cgroups.feature."""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from harness.cgroups import (
    KERNEL_UNLIMITED_BYTES,
    job_controllers,
    job_dirs,
    job_file,
    job_pids,
    job_procs_dirs,
    placement,
)
from harness.speed import scaled
from harness.worker import wait_until_ended
from jobmgr.worker import UNLIMITED, JobSpec, JobState, Limits, Mount, Sandbox, Worker
from jobmgr.worker.cgroups import _devices

from ._phrases import MiB
from ._worker_steps import start
from .fixtures_scenario import Scenario

scenarios("cgroups.feature")


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
def _oom_in_one_process(worker: Worker, scenario: Scenario, background: str, mib: int) -> None:
    script = f'{background} & python3 -c "{HOG_128_MIB}"; wait'
    start(worker, scenario, ["sh", "-c", script], Limits(memory_bytes=mib * MiB))


@when(
    parsers.parse(
        'I start, as root, a job that mounts the cgroup filesystem, writes "max" to every '
        "memory limit it finds there, then allocates 128 MiB, with a memory limit of {mib:d} MiB"
    )
)
def _lift_limits(worker: Worker, scenario: Scenario, mib: int) -> None:
    limits = Limits(memory_bytes=mib * MiB)
    spec = JobSpec(["python3", "-c", LIFT_LIMITS], limits=limits, run_as="root")
    scenario.job = worker.start(spec)


@then(parsers.parse("within {seconds:d} seconds the job ends, FAILED by signal {signo:d}"))
def _ends_killed(worker: Worker, scenario: Scenario, seconds: int, signo: int) -> None:
    deadline = time.monotonic() + scaled(seconds)
    while not (status := worker.status(scenario.job)).terminated and time.monotonic() < deadline:
        time.sleep(0.1)
    said = b"".join(chunk.data for chunk in worker.output(scenario.job, follow=False))
    assert (status.state, status.signal) == (JobState.FAILED, signo), (status, said)


@then("the OOM killer is reported")
def _oom(worker: Worker, scenario: Scenario) -> None:
    status = worker.status(scenario.job)
    assert status.oom_killed, status


@then(
    parsers.parse("over {seconds:g} seconds it uses at most {share:g} CPU-seconds per wall second")
)
def _cpu_share(worker: Worker, scenario: Scenario, seconds: float, share: float) -> None:
    time.sleep(0.5)  # let the loop get going
    before, t0 = worker.status(scenario.job).cpu_seconds, time.monotonic()
    time.sleep(seconds)
    after, t1 = worker.status(scenario.job).cpu_seconds, time.monotonic()
    used = (after - before) / (t1 - t0)
    worker.stop(scenario.job, grace=1)
    assert 0.05 < used <= share, used


@then(parsers.parse("the job's cgroup holds at most {count:d} processes"))
def _pids_held(worker: Worker, scenario: Scenario, cgroup_parent: str, count: int) -> None:
    status = worker.status(scenario.job)
    assert not status.terminated, (status, list(worker.output(scenario.job))[-5:])
    current = job_file(cgroup_parent, scenario.job, "pids.current")
    assert int(current.read_text()) <= count
    events = job_file(cgroup_parent, scenario.job, "pids.events")
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
def _stop_bomb(worker: Worker, scenario: Scenario, grace: float, most: float) -> None:
    began = time.monotonic()
    worker.stop(scenario.job, grace=grace)
    # The grace period is wall-clock time on any machine; the rest scales with its speed.
    assert time.monotonic() - began <= grace + scaled(most - grace)


@pytest.fixture
def io_dir() -> Iterator[Path]:
    """A directory in the host's /var/tmp (large temporary files: on a disk on any host; in the
    test VM, its scratch disk), which jobs may mount writable, on a disk the driver throttles:
    the kernel throttles block I/O at a disk's request queue, and a job's own files are on a
    tmpfs."""
    path = Path("/var/tmp") / f"jobmgr-test-io-{os.getpid()}-{time.monotonic_ns()}"
    disk, throttled = _devices.disk_holding(str(path.parent)), _devices.throttle_devices()
    assert disk in throttled, f"{path.parent} is on {disk}, not on a throttled disk {throttled}"
    path.mkdir()
    os.chmod(path, 0o777)  # for the job, running as nobody
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def worker_sandbox(io_dir: Path) -> Sandbox:
    return Sandbox(mount_sources=(f"{io_dir}:rw",))


def start_on_disk(
    worker: Worker, scenario: Scenario, io_dir: Path, argv: list[str], limits: Limits
) -> None:
    """Start ``argv`` as nobody with the test's directory on a disk at /io."""
    mount = Mount(str(io_dir), "/io", writable=True)
    spec = JobSpec(argv, limits=limits, run_as="nobody", mounts=[mount])
    scenario.job = worker.start(spec)


@when(
    parsers.parse(
        "I start a dd writing {size:d} MiB with oflag=direct to a file on a disk "
        "with an IO write limit of {rate:d} MiB/s"
    )
)
def _dd_write(worker: Worker, scenario: Scenario, io_dir: Path, size: int, rate: int) -> None:
    argv = ["dd", "if=/dev/zero", "of=/io/written", "bs=1M", f"count={size}", "oflag=direct"]
    start_on_disk(worker, scenario, io_dir, argv, Limits(io_write_bps=rate * MiB))


@given(parsers.parse("a {size:d} MiB file on a disk"), target_fixture="io_file")
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
def _dd_read(worker: Worker, scenario: Scenario, io_file: Path, rate: int) -> None:
    argv = ["dd", f"if=/io/{io_file.name}", "of=/dev/null", "bs=1M", "iflag=direct"]
    start_on_disk(worker, scenario, io_file.parent, argv, Limits(io_read_bps=rate * MiB))


@then(parsers.parse("the job ran for at least {seconds:g} seconds"))
def _ran_for(worker: Worker, scenario: Scenario, seconds: float) -> None:
    status = worker.status(scenario.job)
    assert status.ended_at is not None
    assert status.ended_at - status.started_at >= seconds, status


@when(parsers.parse('I start "{command}" with every limit lifted'))
def _start_unlimited(worker: Worker, scenario: Scenario, command: str) -> None:
    start(worker, scenario, shlex.split(command), UNLIMITED)


@then("its cgroup has no CPU, memory, IO or pids limit")
def _no_limits(scenario: Scenario, cgroup_parent: str) -> None:
    def read(*names: str) -> str:
        return job_file(cgroup_parent, scenario.job, *names).read_text().strip()

    assert read("cpu.cfs_quota_us", "cpu.max").split()[0] in ("-1", "max")
    memory = read("memory.limit_in_bytes", "memory.max")
    assert memory in ("max", str(KERNEL_UNLIMITED_BYTES)), memory
    assert read("pids.max") == "max"
    # v1 lists a rule per throttled device in each direction's file, v2 a line per device.
    throttles = [read(f"blkio.throttle.{way}_bps_device", "io.max") for way in ("read", "write")]
    assert not any(throttles), throttles


@then("the job has a cgroup in every hierarchy")
def _has_cgroups(scenario: Scenario, cgroup_parent: str) -> None:
    assert job_dirs(cgroup_parent, scenario.job), "the job has no cgroup directory"
    placed = job_procs_dirs(cgroup_parent, scenario.job)
    # The kernel's word for where the job's processes are, for every controller it is under:
    # a path from the root of that controller's hierarchy, which the directory the driver
    # placed them in ends with.
    controllers = job_controllers(cgroup_parent)
    for pid in job_pids(cgroup_parent, scenario.job):
        where = placement(pid, controllers)
        astray = {
            controller: path
            for controller, path in where.items()
            if f"/{cgroup_parent}/{scenario.job}" not in path
            or not any(directory.endswith(path) for directory in placed)
        }
        assert not astray, f"process {pid} is not in the job's cgroup {placed}: {astray}"


@then("no cgroup of the job is left")
def _no_cgroups(scenario: Scenario, cgroup_parent: str) -> None:
    assert job_dirs(cgroup_parent, scenario.job) == []
