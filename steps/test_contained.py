"""Steps for features/contained.feature."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from pytest_bdd import given, parsers, scenarios, then, when

from harness.cgroups import job_file
from harness.figures import report
from harness.poll import eventually
from harness.procs import marked_processes
from harness.server import ServerProgram
from harness.speed import scaled
from jobmgr.api import job_pb2

from ._bystanders import MemoryWatch, Neighbour
from ._misbehaving_jobs import CPU_HOG, DAEMONISE, ESCAPE, FORK_BOMB, LOOK_AROUND, MEMORY_HOG
from ._phrases import MiB
from .fixtures_scenario import Scenario

scenarios("contained.feature")

ESCAPE_LIMIT = 256 * MiB


def _python(scenario: Scenario, script: str, *args: str) -> list[str]:
    """argv running the Python ``script``, the scenario's marker its first argument."""
    return ["python3", "-c", script, scenario.program.marker, *args]


# ---- the neighbour ----------------------------------------------------------------------------


@given("a neighbour job printing a line every 0.1 seconds, with a reader and a Status poller")
def _neighbour(scenario: Scenario, request: pytest.FixtureRequest) -> None:
    neighbour = Neighbour(scenario.program)
    request.addfinalizer(neighbour.close)
    scenario.notes.update(neighbour=neighbour, since=time.monotonic())


@then("the neighbour's output never paused for 2 seconds and every Status answered within 1 second")
def _calm(scenario: Scenario) -> None:
    calm = scenario.notes["neighbour"].calm_since(scenario.notes["since"])
    report(
        f"neighbour: {calm.lines} lines, longest silence {calm.longest_silence:.3f}s, "
        f"{calm.statuses} Status calls, slowest {calm.slowest_status * 1000:.1f} ms"
    )
    assert not calm.errors, calm.errors
    assert calm.longest_silence < scaled(2.0), calm
    assert calm.slowest_status < scaled(1.0), calm


# ---- memory -----------------------------------------------------------------------------------


@when(
    parsers.parse(
        "the admin starts a job that allocates memory without end, with a memory limit of "
        "{mib:d} MiB"
    )
)
def _memory_hog(scenario: Scenario, mib: int) -> None:
    limits = job_pb2.Limits(memory_bytes=mib * MiB)
    scenario.job = scenario.program.start_job(_python(scenario, MEMORY_HOG), limits)


# ---- fork bomb --------------------------------------------------------------------------------


@when(
    parsers.parse("the admin starts a fork bomb that ignores SIGTERM, with a pids limit of {n:d}")
)
def _fork_bomb(scenario: Scenario, n: int) -> None:
    server = scenario.program
    scenario.job = server.start_job(_python(scenario, FORK_BOMB), job_pb2.Limits(pids=n))
    scenario.notes["most_seen"] = 0


@when(parsers.parse("the bomb has been going for {seconds:d} seconds"))
def _bomb_going(scenario: Scenario, seconds: int) -> None:
    # From the moment the bomb runs: its python (SIGTERM ignored) and the shell it forked. On
    # a slow machine the interpreter alone can take longer than ``seconds`` to get there, and
    # a Stop before it ignores SIGTERM would prove nothing.
    started = lambda: len(_job_processes(scenario)) >= 2  # noqa: E731
    try:
        eventually(started, 10.0, "the fork bomb to start")
    except AssertionError as exc:
        status = scenario.program.status(scenario.job)
        said = scenario.program.output(scenario.job, follow=False)[-2000:]
        raise AssertionError(f"{exc}; the job: {status}, its output ends {said!r}") from None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = len(_job_processes(scenario))
        scenario.notes["most_seen"] = max(scenario.notes["most_seen"], seen)
        time.sleep(0.1)


@then(parsers.parse("the job never had more than {n:d} processes at once"))
def _held(scenario: Scenario, n: int) -> None:
    peak = _pids_peak(scenario.program, scenario.job)
    report(
        f"fork bomb: pids.peak {peak}, "
        f"most of its processes seen at once on the host {scenario.notes['most_seen']}"
    )
    assert scenario.notes["most_seen"] <= n
    if peak is not None:
        assert peak <= n, peak


def _pids_peak(server: ServerProgram, job: str) -> int | None:
    """The job's pids.peak (Linux 6.1+), if the kernel keeps one."""
    try:
        return int(job_file(server.cgroup_parent, job, "pids.peak").read_text())
    except (FileNotFoundError, ValueError):
        return None


@when(parsers.parse("the admin stops the job with a grace period of {seconds:d} second"))
def _stop(scenario: Scenario, seconds: int) -> None:
    began = time.monotonic()
    reply = scenario.program.stub().Stop(
        job_pb2.StopRequest(uuid=scenario.job, grace=Duration(seconds=seconds)),
        timeout=scaled(60),
    )
    scenario.notes.update(stop_took=time.monotonic() - began, stopped=reply.job, grace=seconds)


@then(parsers.parse("the Stop returned within {seconds:d} seconds, the job STOPPED by signal 9"))
def _stopped(scenario: Scenario, seconds: int) -> None:
    took, status = scenario.notes["stop_took"], scenario.notes["stopped"]
    report(f"stop took {took:.3f}s: {job_pb2.JobState.Name(status.state)} signal {status.signal}")
    # The grace period is wall-clock time on any machine; the rest scales with its speed.
    grace = scenario.notes["grace"]
    assert took <= grace + scaled(seconds - grace), took
    assert (status.state, status.signal) == (job_pb2.JOB_STATE_STOPPED, 9), status


@then("no process of the job is left anywhere on the host")
def _none_left(scenario: Scenario) -> None:
    left = _job_processes(scenario)
    assert not left, left


def _job_processes(scenario: Scenario) -> list[int]:
    """The processes on the host carrying the scenario's marker, but for the neighbour's: they
    carry the marker too, and are told apart by their cgroup."""
    neighbour: Neighbour = scenario.notes["neighbour"]

    def is_neighbour(pid: int) -> bool:
        try:
            return neighbour.job in Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return True

    return [pid for pid in marked_processes(scenario.program.marker) if not is_neighbour(pid)]


@then("within 1 second no process of the job is left anywhere on the host")
def _none_left_soon(scenario: Scenario) -> None:
    eventually(lambda: not _job_processes(scenario), 1.0, "the daemon to die with its job")


# ---- CPU --------------------------------------------------------------------------------------


@when(parsers.parse("the admin starts a job of 4 busy loops with a CPU limit of {cpu:g}"))
def _cpu_hog(scenario: Scenario, cpu: float) -> None:
    server = scenario.program
    scenario.job = server.start_job(_python(scenario, CPU_HOG), job_pb2.Limits(cpu=cpu))


@when(parsers.parse("the hog has been running for {seconds:d} seconds"))
def _hog_runs(scenario: Scenario, seconds: int) -> None:
    server = scenario.program
    time.sleep(0.5)  # let it get going
    first, began = server.status(scenario.job).cpu_seconds, time.monotonic()
    time.sleep(seconds)
    last, ended = server.status(scenario.job).cpu_seconds, time.monotonic()
    scenario.notes["cpu_rate"] = (last - first) / (ended - began)


@then(parsers.parse("the hog used at most {rate:g} CPU-seconds per second of it"))
def _held_to_quota(scenario: Scenario, rate: float) -> None:
    used = scenario.notes["cpu_rate"]
    report(f"cpu hog: {used:.3f} CPU-seconds per second")
    assert 0.05 < used <= rate, used


# ---- daemons ----------------------------------------------------------------------------------


@when(
    "the admin starts a job that double-forks a daemon into a new session, closes its stdout "
    "and stderr, and ignores SIGTERM"
)
def _daemoniser(scenario: Scenario) -> None:
    server = scenario.program
    scenario.job = server.start_job(_python(scenario, DAEMONISE, "stay"))


@when("the job and its daemon are both running")
def _daemon_running(scenario: Scenario) -> None:
    both = lambda: len(_job_processes(scenario)) >= 2  # noqa: E731
    eventually(both, 10.0, "the job and its daemon")
    assert scenario.program.status(scenario.job).state == job_pb2.JOB_STATE_RUNNING


@when("the admin starts a job that double-forks a daemon ignoring SIGTERM, then exits 0")
def _daemon_then_exit(scenario: Scenario) -> None:
    server = scenario.program
    scenario.job = server.start_job(_python(scenario, DAEMONISE, "exit"))


@then("the job is EXITED with code 0")
@then("the job EXITED with code 0")
def _exited(scenario: Scenario) -> None:
    status = scenario.program.wait_ended(scenario.job, timeout=120)
    assert (status.state, status.exit_code) == (job_pb2.JOB_STATE_EXITED, 0), status


# ---- 5 GiB ------------------------------------------------------------------------------------


@when("the admin starts a job writing 5 GiB to stdout as fast as it can, and a client follows it")
def _flood(scenario: Scenario) -> None:
    server = scenario.program
    watch = MemoryWatch(server.pid)
    began = time.monotonic()
    scenario.job = server.start_job(["head", "-c", "5G", "/dev/zero"])
    received: list[job_pb2.OutputResponse] = []
    stream = server.stub().Output(job_pb2.OutputRequest(uuid=scenario.job), timeout=scaled(300))
    follower = threading.Thread(target=lambda: received.extend(stream), daemon=True)
    follower.start()
    status = server.wait_ended(scenario.job, timeout=300)
    follower.join(scaled(60))
    took = time.monotonic() - began
    grew = watch.stop()
    scenario.notes.update(received=received, grew=grew, flood_status=status)
    report(
        f"5 GiB job: {took:.1f}s, server RSS grew {grew / MiB:.1f} MiB "
        f"(from {watch.baseline / MiB:.1f} MiB)"
    )


@then(parsers.parse("the server's memory grew by less than {mib:d} MiB while it ran"))
def _flat(scenario: Scenario, mib: int) -> None:
    assert scenario.notes["grew"] < mib * MiB, scenario.notes["grew"]


@then("the follower received exactly the first 8 MiB, then a notice that the output was truncated")
def _capped(scenario: Scenario) -> None:
    received: list[job_pb2.OutputResponse] = scenario.notes["received"]
    data = b"".join(m.output for m in received)
    assert len(data) == 8 * MiB and data == bytes(len(data)), len(data)
    assert received and received[-1].truncated and not received[-1].output, received[-1:]


@then("the job's status says its output was truncated")
def _status_truncated(scenario: Scenario) -> None:
    assert scenario.program.status(scenario.job).output_truncated


@then("the job's output takes at most 8 MiB and 64 KiB on disk")
def _disk(scenario: Scenario) -> None:
    files = list((scenario.program.state_dir / "jobs").glob(f"{scenario.job}*"))
    assert files, "the job has no file in the state dir"
    used = sum(f.stat().st_blocks * 512 for f in files)
    report(f"5 GiB job: {used} bytes on disk")
    assert used <= 8 * MiB + 64 * 1024, used


# ---- the host ---------------------------------------------------------------------------------


@when("the admin starts a job that looks around, and the host mounts a tmpfs while it runs")
def _look_around(scenario: Scenario, tmp_path: Path) -> None:
    server = scenario.program
    target = tmp_path / "host-mount"
    target.mkdir()
    scenario.job = server.start_job(_python(scenario, LOOK_AROUND, str(server.pid), str(target)))
    stream = server.stub().Output(job_pb2.OutputRequest(uuid=scenario.job), timeout=scaled(60))
    out = b""
    mounted = False
    try:
        for message in stream:
            out += message.output
            if b"ready\n" in out and not mounted:
                subprocess.run(["mount", "-t", "tmpfs", "h5-host", str(target)], check=True)
                mounted = True
    finally:
        if mounted:
            subprocess.run(["umount", str(target)], check=True)
    assert mounted, out
    lines = (line.partition(" ") for line in out.decode().splitlines())
    seen = {key: value for key, _, value in lines}
    report(f"a job looking around saw: {seen}")
    scenario.notes["seen"] = seen


@then("the job saw only its own few processes and could not signal the server")
def _own_pids(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    pids = [int(p) for p in seen["pids"].split()]
    assert pids and len(pids) <= 4 and max(pids) < 10, pids
    assert seen["signal"] == "server No such process", seen["signal"]


@then(
    parsers.parse(
        'the only network interface it saw, in /proc/net/dev and in /sys/class/net, is "{name}"'
    )
)
def _only_lo(scenario: Scenario, name: str) -> None:
    seen = scenario.notes["seen"]
    assert seen["proc-net"] == name, seen["proc-net"]
    assert seen["sys-net"] == name, f"/sys/class/net in the job lists: {seen['sys-net']}"


@then("it never saw the host's new mount")
def _no_mount(scenario: Scenario) -> None:
    assert scenario.notes["seen"]["mounted"] == "False"


@when(
    parsers.parse(
        "the admin starts, as {user}, a job that tries to move itself to the root cgroup and to "
        "lift its memory limit"
    )
)
def _escape(scenario: Scenario, user: str) -> None:
    argv = _python(scenario, ESCAPE)
    server = scenario.program
    limits = job_pb2.Limits(memory_bytes=ESCAPE_LIMIT)
    request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:], limits=limits, run_as=user)
    scenario.job = server.stub().Start(request, timeout=scaled(30)).uuid
    said = b""
    output = job_pb2.OutputRequest(uuid=scenario.job)
    for message in server.stub().Output(output, timeout=scaled(60)):
        said += message.output
        if said.endswith(b"\n"):
            break
    words = said.decode().split()
    scenario.notes["escape"] = dict(zip(words[::2], words[1::2], strict=False))
    scenario.notes["where"] = _host_view(server, scenario.job)
    stop = job_pb2.StopRequest(uuid=scenario.job, grace=Duration())
    server.stub().Stop(stop, timeout=scaled(30))
    report(
        f"a job as {user} trying to leave its cgroup: it said {scenario.notes['escape']}, "
        f"the host sees {scenario.notes['where']}"
    )


def _host_view(server: ServerProgram, job: str) -> dict[str, str]:
    """Where the host sees the job's processes (pids hierarchy), and its memory limit."""
    seen = {}
    for pid in marked_processes(server.marker):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            groups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        if b"cgroup.procs" in cmdline:
            pids = [g for g in groups if ":pids:" in g or g.startswith("0::")]
            seen[f"process {pid}"] = pids[0].split(":", 2)[2] if pids else "?"
    try:
        limit = job_file(server.cgroup_parent, job, "memory.limit_in_bytes", "memory.max")
    except FileNotFoundError:
        return seen
    seen["memory limit"] = limit.read_text().strip()
    return seen


@then("both attempts failed, and the job stayed in its own cgroup")
def _stayed(scenario: Scenario) -> None:
    got, where = scenario.notes["escape"], scenario.notes["where"]
    processes = {k: v for k, v in where.items() if k.startswith("process")}
    assert processes, f"the job's process was not found on the host: {where}"
    assert all(scenario.job in path for path in processes.values()), (
        f"the job moved itself out of its cgroup: it said {got}, the host sees {where}"
    )
    assert where.get("memory limit") == str(ESCAPE_LIMIT), (
        f"the job lifted its own memory limit: it said {got}, the host sees {where}"
    )
