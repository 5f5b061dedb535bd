"""Steps for features/contained.feature."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from pytest_bdd import given, parsers, scenarios, then, when

from jobmgr.api import job_pb2

from ._grpc_steps import eventually
from ._hostile_jobs import CPU_HOG, DAEMONISE, ESCAPE, FORK_BOMB, LOOK_AROUND, MEMORY_HOG
from ._hostile_server import HostileServer, marked_processes
from ._hostile_steps import *  # noqa: F403  # the shared steps
from ._hostile_steps import Hostile, report
from ._hostile_watch import MemoryWatch, Neighbour

scenarios("contained.feature")

MiB = 1024 * 1024
ESCAPE_LIMIT = 256 * MiB


def _grace(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def _python(server: HostileServer, script: str, *args: str) -> list[str]:
    return ["python3", "-c", script, server.marker, *args]


# ---- the neighbour ----------------------------------------------------------------------------


@given("a neighbour job printing a line every 0.1 seconds, with a reader and a Status poller")
def _neighbour(hostile: Hostile, request: pytest.FixtureRequest) -> None:
    neighbour = Neighbour(hostile.srv)
    request.addfinalizer(neighbour.close)
    hostile.notes.update(neighbour=neighbour, since=time.monotonic())


@then("the neighbour's output never paused for 2 seconds and every Status answered within 1 second")
def _calm(hostile: Hostile) -> None:
    calm = hostile.notes["neighbour"].calm_since(hostile.notes["since"])
    report(
        f"neighbour: {calm.lines} lines, longest silence {calm.longest_silence:.3f}s, "
        f"{calm.statuses} Status calls, slowest {calm.slowest_status * 1000:.1f} ms"
    )
    assert not calm.errors, calm.errors
    assert calm.longest_silence < 2.0, calm
    assert calm.slowest_status < 1.0, calm


# ---- memory -----------------------------------------------------------------------------------


@when(
    parsers.parse(
        "the admin starts a job that allocates memory without end, with a memory limit of "
        "{mib:d} MiB"
    )
)
def _memory_hog(hostile: Hostile, mib: int) -> None:
    server = hostile.srv
    limits = job_pb2.Limits(memory_bytes=mib * MiB)
    hostile.job = server.start_job(_python(server, MEMORY_HOG), limits)


@then(
    parsers.parse("within {seconds:d} seconds the job is FAILED by signal 9 with its OOM flag set")
)
def _oom(hostile: Hostile, seconds: int) -> None:
    status = hostile.srv.wait_ended(hostile.job, timeout=seconds)
    failed = (job_pb2.JOB_STATE_FAILED, 9, True)
    assert (status.state, status.signal, status.oom_killed) == failed, status
    state = job_pb2.JobState.Name(status.state)
    report(f"memory hog: {state} signal {status.signal}, reason {status.reason!r}")


# ---- fork bomb --------------------------------------------------------------------------------


@when(
    parsers.parse("the admin starts a fork bomb that ignores SIGTERM, with a pids limit of {n:d}")
)
def _fork_bomb(hostile: Hostile, n: int) -> None:
    server = hostile.srv
    hostile.job = server.start_job(_python(server, FORK_BOMB), job_pb2.Limits(pids=n))
    hostile.notes["most_seen"] = 0


@when(parsers.parse("the bomb has been going for {seconds:d} seconds"))
def _bomb_going(hostile: Hostile, seconds: int) -> None:
    server = hostile.srv
    neighbour: Neighbour = hostile.notes["neighbour"]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = len([p for p in marked_processes(server.marker) if not _is_neighbour(p, neighbour)])
        hostile.notes["most_seen"] = max(hostile.notes["most_seen"], seen)
        time.sleep(0.1)


@then(parsers.parse("the job never had more than {n:d} processes at once"))
def _held(hostile: Hostile, n: int) -> None:
    peak = _pids_peak(hostile.srv, hostile.job)
    report(
        f"fork bomb: pids.peak {peak}, "
        f"most of its processes seen at once on the host {hostile.notes['most_seen']}"
    )
    assert hostile.notes["most_seen"] <= n
    if peak is not None:
        assert peak <= n, peak


def _pids_peak(server: HostileServer, job: str) -> int | None:
    for path in (
        Path(f"/sys/fs/cgroup/pids/{server.cgroup_parent}/{job}/pids.peak"),
        Path(f"/sys/fs/cgroup/{server.cgroup_parent}/{job}/pids.peak"),
    ):
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
    return None


@when(parsers.parse("the admin stops the job with a grace period of {seconds:d} second"))
def _stop(hostile: Hostile, seconds: int) -> None:
    began = time.monotonic()
    reply = hostile.srv.stub().Stop(
        job_pb2.StopRequest(uuid=hostile.job, grace=_grace(seconds)), timeout=60
    )
    hostile.notes.update(stop_took=time.monotonic() - began, stopped=reply.job)


@then(parsers.parse("the Stop returned within {seconds:d} seconds, the job STOPPED by signal 9"))
def _stopped(hostile: Hostile, seconds: int) -> None:
    took, status = hostile.notes["stop_took"], hostile.notes["stopped"]
    report(f"stop took {took:.3f}s: {job_pb2.JobState.Name(status.state)} signal {status.signal}")
    assert took <= seconds, took
    assert (status.state, status.signal) == (job_pb2.JOB_STATE_STOPPED, 9), status


@then("no process of the job is left anywhere on the host")
def _none_left(hostile: Hostile) -> None:
    left = marked_processes(hostile.srv.marker)
    neighbour: Neighbour = hostile.notes["neighbour"]
    assert not [pid for pid in left if not _is_neighbour(pid, neighbour)], left


def _is_neighbour(pid: int, neighbour: Neighbour) -> bool:
    """The neighbour's processes carry the marker too: tell them apart by their cgroup."""
    try:
        return neighbour.job in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return True


@then("within 1 second no process of the job is left anywhere on the host")
def _none_left_soon(hostile: Hostile) -> None:
    neighbour: Neighbour = hostile.notes["neighbour"]
    eventually(
        lambda: (
            not [p for p in marked_processes(hostile.srv.marker) if not _is_neighbour(p, neighbour)]
        ),
        1.0,
        "the daemon to die with its job",
    )


# ---- CPU --------------------------------------------------------------------------------------


@when(parsers.parse("the admin starts a job of 4 busy loops with a CPU limit of {cpu:g}"))
def _cpu_hog(hostile: Hostile, cpu: float) -> None:
    server = hostile.srv
    hostile.job = server.start_job(_python(server, CPU_HOG), job_pb2.Limits(cpu=cpu))


@when(parsers.parse("the hog has been running for {seconds:d} seconds"))
def _hog_runs(hostile: Hostile, seconds: int) -> None:
    server = hostile.srv
    time.sleep(0.5)  # let it get going
    first, began = server.status(hostile.job).cpu_seconds, time.monotonic()
    time.sleep(seconds)
    last, ended = server.status(hostile.job).cpu_seconds, time.monotonic()
    hostile.notes["cpu_rate"] = (last - first) / (ended - began)


@then(parsers.parse("the hog used at most {rate:g} CPU-seconds per second of it"))
def _held_to_quota(hostile: Hostile, rate: float) -> None:
    used = hostile.notes["cpu_rate"]
    report(f"cpu hog: {used:.3f} CPU-seconds per second")
    assert 0.05 < used <= rate, used


# ---- daemons ----------------------------------------------------------------------------------


@when(
    "the admin starts a job that double-forks a daemon into a new session, closes its stdout "
    "and stderr, and ignores SIGTERM"
)
def _daemoniser(hostile: Hostile) -> None:
    server = hostile.srv
    hostile.job = server.start_job(_python(server, DAEMONISE, "stay"))


@when("the job and its daemon are both running")
def _daemon_running(hostile: Hostile) -> None:
    server = hostile.srv
    neighbour: Neighbour = hostile.notes["neighbour"]

    def both() -> bool:
        mine = [p for p in marked_processes(server.marker) if not _is_neighbour(p, neighbour)]
        return len(mine) >= 2

    eventually(both, 10.0, "the job and its daemon")
    assert server.status(hostile.job).state == job_pb2.JOB_STATE_RUNNING


@when("the admin starts a job that double-forks a daemon ignoring SIGTERM, then exits 0")
def _daemon_then_exit(hostile: Hostile) -> None:
    server = hostile.srv
    hostile.job = server.start_job(_python(server, DAEMONISE, "exit"))


@then("the job is EXITED with code 0")
@then("the job EXITED with code 0")
def _exited(hostile: Hostile) -> None:
    status = hostile.srv.wait_ended(hostile.job, timeout=120)
    assert (status.state, status.exit_code) == (job_pb2.JOB_STATE_EXITED, 0), status


# ---- 5 GiB ------------------------------------------------------------------------------------


@when("the admin starts a job writing 5 GiB to stdout as fast as it can, and a client follows it")
def _flood(hostile: Hostile) -> None:
    server = hostile.srv
    watch = MemoryWatch(server.pid)
    began = time.monotonic()
    hostile.job = server.start_job(["head", "-c", "5G", "/dev/zero"])
    received: list[job_pb2.OutputResponse] = []
    stream = server.stub().Output(job_pb2.OutputRequest(uuid=hostile.job), timeout=300)
    follower = threading.Thread(target=lambda: received.extend(stream), daemon=True)
    follower.start()
    status = server.wait_ended(hostile.job, timeout=300)
    follower.join(60)
    took = time.monotonic() - began
    grew = watch.stop()
    report(
        f"5 GiB job: {took:.1f}s, server RSS grew {grew / MiB:.1f} MiB "
        f"(from {watch.baseline / MiB:.1f} MiB)"
    )
    hostile.notes.update(received=received, grew=grew, flood_status=status)


@then(parsers.parse("the server's memory grew by less than {mib:d} MiB while it ran"))
def _flat(hostile: Hostile, mib: int) -> None:
    assert hostile.notes["grew"] < mib * MiB, hostile.notes["grew"]


@then("the follower received exactly the first 8 MiB, then a notice that the output was truncated")
def _capped(hostile: Hostile) -> None:
    received: list[job_pb2.OutputResponse] = hostile.notes["received"]
    data = b"".join(m.output for m in received)
    assert len(data) == 8 * MiB and data == bytes(len(data)), len(data)
    assert received and received[-1].truncated and not received[-1].output, received[-1:]


@then("the job's status says its output was truncated")
def _status_truncated(hostile: Hostile) -> None:
    assert hostile.srv.status(hostile.job).output_truncated


@then("the job's output takes at most 8 MiB and 64 KiB on disk")
def _disk(hostile: Hostile) -> None:
    files = list((hostile.srv.state_dir / "jobs").glob(f"{hostile.job}*"))
    assert files, "the job has no file in the state dir"
    used = sum(f.stat().st_blocks * 512 for f in files)
    report(f"5 GiB job: {used} bytes on disk")
    assert used <= 8 * MiB + 64 * 1024, used


# ---- the host ---------------------------------------------------------------------------------


@when("the admin starts a job that looks around, and the host mounts a tmpfs while it runs")
def _look_around(hostile: Hostile, tmp_path: Path) -> None:
    server = hostile.srv
    target = tmp_path / "host-mount"
    target.mkdir()
    hostile.job = server.start_job(_python(server, LOOK_AROUND, str(server.pid), str(target)))
    stream = server.stub().Output(job_pb2.OutputRequest(uuid=hostile.job), timeout=60)
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
    seen = {}
    for line in out.decode().splitlines():
        key, _, value = line.partition(" ")
        seen[key] = value
    hostile.notes["seen"] = seen
    report(f"a job looking around saw: {seen}")


@then("the job saw only its own few processes and could not signal the server")
def _own_pids(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    pids = [int(p) for p in seen["pids"].split()]
    assert pids and len(pids) <= 4 and max(pids) < 10, pids
    assert seen["signal"] == "server No such process", seen["signal"]


@then(
    parsers.parse(
        'the only network interface it saw, in /proc/net/dev and in /sys/class/net, is "{name}"'
    )
)
def _only_lo(hostile: Hostile, name: str) -> None:
    seen = hostile.notes["seen"]
    assert seen["proc-net"] == name, seen["proc-net"]
    assert seen["sys-net"] == name, f"/sys/class/net in the job lists: {seen['sys-net']}"


@then("it never saw the host's new mount")
def _no_mount(hostile: Hostile) -> None:
    assert hostile.notes["seen"]["mounted"] == "False"


@when(
    parsers.parse(
        "the admin starts, as {user}, a job that tries to move itself to the root cgroup and to "
        "lift its memory limit"
    )
)
def _escape(hostile: Hostile, user: str) -> None:
    server = hostile.srv
    argv = _python(server, ESCAPE)
    limits = job_pb2.Limits(memory_bytes=ESCAPE_LIMIT)
    request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:], limits=limits, run_as=user)
    hostile.job = server.stub().Start(request, timeout=30).uuid
    said = b""
    for message in server.stub().Output(job_pb2.OutputRequest(uuid=hostile.job), timeout=60):
        said += message.output
        if said.endswith(b"\n"):
            break
    words = said.decode().split()
    hostile.notes["escape"] = dict(zip(words[::2], words[1::2], strict=False))
    hostile.notes["where"] = _host_view(server, hostile.job)
    server.stub().Stop(job_pb2.StopRequest(uuid=hostile.job, grace=_grace(0)), timeout=30)
    report(
        f"a job as {user} trying to leave its cgroup: it said {hostile.notes['escape']}, "
        f"the host sees {hostile.notes['where']}"
    )


def _host_view(server: HostileServer, job: str) -> dict[str, str]:
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
    for path in (
        Path(f"/sys/fs/cgroup/memory/{server.cgroup_parent}/{job}/memory.limit_in_bytes"),
        Path(f"/sys/fs/cgroup/{server.cgroup_parent}/{job}/memory.max"),
    ):
        if path.exists():
            seen["memory limit"] = path.read_text().strip()
    return seen


@then("both attempts failed, and the job stayed in its own cgroup")
def _stayed(hostile: Hostile) -> None:
    got, where = hostile.notes["escape"], hostile.notes["where"]
    processes = {k: v for k, v in where.items() if k.startswith("process")}
    assert processes, f"the job's process was not found on the host: {where}"
    assert all(hostile.job in path for path in processes.values()), (
        f"the job moved itself out of its cgroup: it said {got}, the host sees {where}"
    )
    assert where.get("memory limit") == str(ESCAPE_LIMIT), (
        f"the job lifted its own memory limit: it said {got}, the host sees {where}"
    )
