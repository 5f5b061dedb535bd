"""Steps for features/faults.feature: faults injected into a real jobmgr-server and launcher."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from jobmgr.api import job_pb2

from ._faults_pidns import PidNamespaceServer, launch_pidns_server  # noqa: F401  # a fixture
from ._faults_tools import (
    FOREVER,
    LINES,
    Follower,
    HealthWatcher,
    PrimedClient,
    consecutive_lines,
    cut_to_half,
    damage_head,
    lines,
    run_client,
    signal_launcher,
    start_raw,
)
from ._grpc_steps import eventually
from ._hostile_server import LaunchServer, alive, marked_processes
from ._hostile_steps import *  # noqa: F403  # the shared steps
from ._hostile_steps import Hostile, mark_log, new_log, report
from .fixtures_server import cgroup_dirs

scenarios("faults.feature")

STATE = {"RUNNING", "EXITED", "STOPPED", "FAILED", "LOST"}


def log_path(hostile: Hostile, job: str | None = None) -> Path:
    return hostile.srv.state_dir / "jobs" / f"{job or hostile.job}.log"


def restart(hostile: Hostile) -> None:
    mark_log(hostile)
    hostile.srv.start()


def kill_server_and_launcher(hostile: Hostile) -> float:
    """SIGKILL the server, then its launcher; when the launcher died (monotonic)."""
    server = hostile.srv
    launcher = server.launcher_pid()
    assert launcher is not None, "no launcher is running"
    server.kill9()
    signal_launcher(server, signal.SIGKILL)
    killed = time.time()
    eventually(lambda: not alive(launcher), 10, "the launcher to die")
    return killed


def listed(hostile: Hostile) -> dict[str, job_pb2.StatusResponse]:
    reply = hostile.srv.stub().List(job_pb2.ListRequest(), timeout=30)
    return {job.uuid: job for job in reply.jobs}


def one_line_naming(hostile: Hostile, *words: str) -> str:
    """The one line of the server's new log holding every word; fails unless exactly one."""
    found = [line for line in new_log(hostile).splitlines() if all(w in line for w in words)]
    assert len(found) == 1, f"{len(found)} log lines hold {words}:\n{new_log(hostile)[-3000:]}"
    return found[0]


# ---- pid reuse --------------------------------------------------------------------------------


@given(
    parsers.parse(
        "jobmgr-server runs in a PID namespace whose pid_max is {pid_max:d}, beside a canary "
        "that keeps taking its recycled pids"
    )
)
def _pidns_server(
    launch_pidns_server: LaunchServer,  # noqa: F811
    hostile: Hostile,
    pid_max: int,
) -> None:
    hostile.server = launch_pidns_server(pid_max=pid_max)


@when(
    parsers.parse(
        '{count:d} jobs running "true" are started, {width:d} at a time, each followed to its end'
    )
)
def _many_true(hostile: Hostile, count: int, width: int) -> None:
    server = hostile.srv

    def one(_: int) -> str:
        job = server.start_job(["true"])
        try:
            server.output(job, timeout=30)
        except grpc.RpcError as exc:
            hostile.notes.setdefault("unfinished", []).append(f"{job}: {exc.code().name}")
        return job

    began = time.monotonic()
    with ThreadPoolExecutor(width) as pool:
        hostile.notes["jobs"] = list(pool.map(one, range(count)))
    report(f"pid reuse: {count} jobs, {width} at a time, in {time.monotonic() - began:.1f}s")


@then(
    parsers.parse("all {count:d} ended EXITED with code 0, and none is left RUNNING")
)
def _all_exited(hostile: Hostile, count: int) -> None:
    jobs = listed(hostile)
    wrong = [
        f"{job}: {jobs[job].status} {jobs[job].exit_code}"
        for job in hostile.notes["jobs"]
        if (jobs[job].status, jobs[job].exit_code) != ("EXITED", 0)
    ]
    assert len(hostile.notes["jobs"]) == count
    assert not wrong, f"{len(wrong)} of {count} jobs did not end EXITED 0: {wrong[:5]}"
    assert not hostile.notes.get("unfinished"), hostile.notes["unfinished"][:5]


@when(
    parsers.parse(
        '{count:d} jobs running "sleep 60" are started and each is stopped with a grace of '
        "{grace:g} second"
    )
)
def _stop_many(hostile: Hostile, count: int, grace: float) -> None:
    server = hostile.srv
    jobs = [server.start_job(server.marked("exec sleep 60")) for _ in range(count)]

    def stop(job: str) -> str:
        request = job_pb2.StopRequest(uuid=job)
        request.grace.FromNanoseconds(int(grace * 1e9))
        return str(server.stub().Stop(request, timeout=60).job.status)

    with ThreadPoolExecutor(count) as pool:
        hostile.notes["stopped"] = list(pool.map(stop, jobs))


@then(parsers.parse("all {count:d} ended STOPPED"))
def _all_stopped(hostile: Hostile, count: int) -> None:
    assert hostile.notes["stopped"] == ["STOPPED"] * count, hostile.notes["stopped"]


@when("the server is stopped with SIGTERM")
def _sigterm(hostile: Hostile) -> None:
    began = time.monotonic()
    hostile.notes["exit"] = hostile.srv.terminate()
    hostile.notes["exit_took"] = time.monotonic() - began


@then(parsers.parse("it exited 0 within {seconds:d} seconds"))
def _exited_in(hostile: Hostile, seconds: int) -> None:
    assert hostile.notes["exit"] == 0, hostile.srv.stderr[-2000:]
    assert hostile.notes["exit_took"] < seconds, hostile.notes["exit_took"]


@then(
    parsers.parse(
        "no canary process got a signal, of more than {count:d} that ran on recycled pids"
    )
)
def _canary(hostile: Hostile, count: int) -> None:
    server = hostile.srv
    assert isinstance(server, PidNamespaceServer)
    eventually(
        lambda: any(line.startswith("spawned") for line in server.canary_report()),
        10,
        "the canary's tally",
    )
    tally = server.canary_report()
    signalled = [line for line in tally if not line.startswith("spawned")]
    spawned = int(next(line for line in tally if line.startswith("spawned")).split()[1])
    report(f"pid reuse: {spawned} canary processes on recycled pids, {len(signalled)} signalled")
    assert not signalled, signalled[:10]
    assert spawned > count, spawned


# ---- the launcher killed or frozen ------------------------------------------------------------


@given(
    parsers.parse(
        "the admin has started a job printing {count:d} numbered lines, one every millisecond"
    )
)
def _fast_printer(hostile: Hostile, count: int) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked(LINES.format(count=count, every=0.001)))
    hostile.notes["count"] = count


@given(parsers.parse("the admin has started a job sleeping {seconds:d} seconds"))
def _sleeper(hostile: Hostile, seconds: int) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked(f"exec sleep {seconds}"))


@given(parsers.parse("the admin has also started a job sleeping {seconds:d} seconds"))
def _another_sleeper(hostile: Hostile, seconds: int) -> None:
    job = hostile.srv.start_job(hostile.srv.marked(f"exec sleep {seconds}"))
    hostile.notes.setdefault("others", []).append(job)


WRITER = (
    "import random, sys, time\n"
    "r = random.Random({seed})\n"
    "for _ in range({chunks}):\n"
    "    sys.stdout.buffer.write(r.randbytes(65536)); sys.stdout.flush(); time.sleep(0.005)\n"
)


@given(
    parsers.parse(
        "the admin has also started a job writing {mib:d} MiB of random bytes, 64 KiB at a time"
    )
)
def _writer(hostile: Hostile, mib: int) -> None:
    script = WRITER.format(seed=mib, chunks=mib * 16)
    job = hostile.srv.start_job(["python3", "-c", script, hostile.srv.marker])
    hostile.notes["writer"] = (job, random.Random(mib).randbytes(mib * 1024 * 1024))


@then(parsers.parse("the other job's output is exactly its {mib:d} MiB"))
def _writer_whole(hostile: Hostile, mib: int) -> None:
    job, expected = hostile.notes["writer"]
    status = hostile.srv.wait_ended(job)
    assert (status.status, status.exit_code) == ("EXITED", 0), status
    output = hostile.srv.output(job)
    assert len(output) == len(expected) == mib * 1024 * 1024, len(output)
    assert output == expected, "the bytes differ"


@given(
    parsers.parse(
        "the admin has started a job that sleeps {seconds:g} seconds, then exits {code:d}"
    )
)
def _sleeps_then_exits(hostile: Hostile, seconds: float, code: int) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked(f"sleep {seconds}; exit {code}"))


@given("jobmgr-client follows its output, and a client watches the server's health")
def _follow_and_watch(hostile: Hostile) -> None:
    hostile.notes["follower"] = Follower(hostile.srv, hostile.job)
    hostile.notes["health"] = HealthWatcher(hostile.srv)
    mark_log(hostile)


@when(parsers.parse("the launcher is killed with SIGKILL once the job has printed {count:d} lines"))
def _kill_launcher(hostile: Hostile, count: int) -> None:
    hostile.notes["follower"].wait_lines(count)
    hostile.notes["since"] = time.monotonic()
    hostile.notes["old_launcher"] = signal_launcher(hostile.srv, signal.SIGKILL)


@when(
    parsers.parse("the launcher is stopped with SIGSTOP once the job has printed {count:d} lines")
)
def _stop_launcher(hostile: Hostile, count: int) -> None:
    server = hostile.srv
    primed = hostile.notes["primed"] = {  # ready before the freeze, to call within it
        "start": PrimedClient(server, "start", "--", "true"),
        "stop": PrimedClient(server, "stop", hostile.notes["others"][0]),
    }
    for client in primed.values():
        client.wait_ready()
    hostile.notes["follower"].wait_lines(count)
    hostile.notes["since"] = time.monotonic()
    hostile.notes["old_launcher"] = signal_launcher(hostile.srv, signal.SIGSTOP)


@when("jobmgr-client start and jobmgr-client stop are run while it is frozen")
def _cli_while_frozen(hostile: Hostile) -> None:
    clients = hostile.notes.pop("primed")
    for client in clients.values():
        client.go()
    hostile.notes["frozen_cli"] = {name: client.result() for name, client in clients.items()}


@then("both failed, saying what became of the job launcher, not that the server cannot be reached")
def _both_failed(hostile: Hostile) -> None:
    for name, done in hostile.notes["frozen_cli"].items():
        stderr = done.stderr.decode()
        assert done.returncode == 1, (name, done.returncode, stderr)
        assert stderr.startswith("error: the job launcher"), (name, stderr)
        assert "cannot connect" not in stderr, (name, stderr)
    assert hostile.srv.status(hostile.notes["others"][0]).status == "RUNNING"


@then(
    parsers.parse(
        "within {seconds:d} seconds health said NOT_SERVING, then SERVING again, with a new "
        "launcher"
    )
)
def _health_bounced(hostile: Hostile, seconds: int) -> None:
    watcher: HealthWatcher = hostile.notes["health"]
    eventually(lambda: watcher.went_down_and_up(hostile.notes["since"]) is not None, 30,
               "health to go NOT_SERVING and back")
    down, up = watcher.went_down_and_up(hostile.notes["since"]) or (0.0, 0.0)
    report(f"launcher fault: NOT_SERVING after {down:.3f}s, SERVING again after {up:.3f}s")
    assert down < seconds, down
    new = hostile.srv.launcher_pid()
    assert new is not None and new != hostile.notes["old_launcher"]
    watcher.close()


@then("the server's log has one line saying the launcher died, killed by signal 9")
def _log_died(hostile: Hostile) -> None:
    pid = hostile.notes["old_launcher"]
    one_line_naming(hostile, f"the job launcher (pid {pid}) died (killed by signal 9)")


@then("the server's log has one line saying the launcher froze and was killed")
def _log_froze(hostile: Hostile) -> None:
    pid = hostile.notes["old_launcher"]
    one_line_naming(hostile, f"the job launcher (pid {pid}) froze", "and was killed")


@then(parsers.parse("the follower printed exactly the {count:d} lines and exited 0"))
def _follower_whole(hostile: Hostile, count: int) -> None:
    code, stdout, stderr = hostile.notes["follower"].finish()
    assert (code, stderr) == (0, b""), (code, stderr)
    printed = stdout.count(b"\n")
    assert stdout == lines(count), f"{printed} lines, not the {count} printed"


@then(
    parsers.re(r"the job is (?P<state>[A-Z]+) with code (?P<code>\d+)$"), converters={"code": int}
)
def _job_ended(hostile: Hostile, state: str, code: int) -> None:
    status = hostile.srv.wait_ended(hostile.job)
    assert (status.status, status.exit_code) == (state, code), status


@then("jobmgr-client stop stops the sleeping job now, and jobmgr-client start starts a job")
def _works_again(hostile: Hostile) -> None:
    stopped = run_client(hostile.srv, "stop", hostile.notes["others"][0])
    assert stopped.returncode == 0 and b"STOPPED" in stopped.stdout, stopped
    started = run_client(hostile.srv, "run", "--", "echo", "back")
    assert (started.returncode, started.stdout) == (0, b"back\n"), started


# ---- LOST with its true time ------------------------------------------------------------------


@given(
    parsers.parse(
        "the admin has started a job printing a numbered line every {every:g} seconds, without end"
    )
)
def _forever(hostile: Hostile, every: float) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked(FOREVER.format(every=every)))
    eventually(lambda: log_path(hostile).stat().st_size > 3000, 10, "the job's first lines")


@when(
    parsers.parse(
        "the server and then its launcher are killed with SIGKILL, and the server is started "
        "again {seconds:d} seconds later"
    )
)
def _both_killed_later(hostile: Hostile, seconds: int) -> None:
    hostile.notes["killed_at"] = kill_server_and_launcher(hostile)
    time.sleep(seconds)
    restart(hostile)


@then(
    parsers.parse(
        "the job is LOST, ended within {seconds:d} seconds of the kill, its reason naming the "
        "launcher"
    )
)
def _lost_in_time(hostile: Hostile, seconds: int) -> None:
    status = hostile.srv.status(hostile.job)
    assert status.status == "LOST", status
    ended = status.ended_at.ToNanoseconds() / 1e9
    report(f"LOST job: ended_at {ended - hostile.notes['killed_at']:+.2f}s from the kill")
    assert abs(ended - hostile.notes["killed_at"]) < seconds, (ended, hostile.notes["killed_at"])
    assert "launcher" in status.reason, status.reason


@then("no process of the job is alive, and none of its cgroups is left")
def _nothing_of_it(hostile: Hostile) -> None:
    assert marked_processes(hostile.srv.marker) == []
    assert not any(hostile.job in path for path in cgroup_dirs(hostile.srv.cgroup_parent))
    assert hostile.job not in hostile.srv.job_cgroups()


@then(
    "jobmgr-client output prints its lines, then says on stderr that the job was lost, and exits 1"
)
def _follower_told(hostile: Hostile) -> None:
    done = run_client(hostile.srv, "output", hostile.job)
    assert done.returncode == 1, done
    assert consecutive_lines(done.stdout) and done.stdout.count(b"\n") >= 10, done.stdout[-200:]
    assert re.fullmatch(rb"error: job \S+: the job was lost: .*launcher.*\n", done.stderr), done


# ---- damaged logs -----------------------------------------------------------------------------


@given(parsers.parse("the admin has run a job printing {count:d} numbered lines to its end"))
def _ran_lines(hostile: Hostile, count: int) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked(LINES.format(count=count, every=0)))
    status = hostile.srv.wait_ended(hostile.job)
    assert (status.status, status.exit_code) == ("EXITED", 0)
    hostile.notes["count"] = count


DAMAGE = {"8 zero bytes": bytes(8), "32 bytes of garbage": bytes(random.Random(7).randbytes(32))}


@when(
    parsers.parse(
        "the server and then its launcher are killed with SIGKILL, {damage} are written at the "
        "head of the job's log, and the server is started again"
    )
)
def _damage_finished(hostile: Hostile, damage: str) -> None:
    kill_server_and_launcher(hostile)
    damage_head(log_path(hostile), DAMAGE[damage])
    restart(hostile)


@when(
    "32 bytes of garbage are written at the head of its log, and the server is killed with "
    "SIGKILL and started again"
)
def _damage_running(hostile: Hostile) -> None:
    damage_head(log_path(hostile), DAMAGE["32 bytes of garbage"])
    hostile.srv.kill9()
    restart(hostile)


@when("the server is killed with SIGKILL and started again")
def _kill_restart(hostile: Hostile) -> None:
    hostile.srv.kill9()
    restart(hostile)


@then(parsers.parse("the job is listed {state} with code {code:d}"))
def _listed_with_code(hostile: Hostile, state: str, code: int) -> None:
    job = listed(hostile).get(hostile.job)
    assert job is not None, "the job is not listed"
    assert (job.status, job.exit_code) == (state, code), job


@then(parsers.parse("the job is listed {state}, with its command"))
def _listed_with_command(hostile: Hostile, state: str) -> None:
    job = listed(hostile).get(hostile.job)
    assert job is not None, "the job is not listed"
    assert job.status == state, job
    assert list(job.argv)[:2] == ["sh", "-c"], job.argv


@then("its status reason says its log's record frame is damaged")
def _reason_damaged(hostile: Hostile) -> None:
    assert "record frame is damaged" in hostile.srv.status(hostile.job).reason


@then(parsers.parse("its output is exactly its {count:d} lines, and ends without error"))
def _exact_output(hostile: Hostile, count: int) -> None:
    assert hostile.srv.output(hostile.job) == lines(count)


@then("the server's log has one line naming the job and its damaged record frame")
def _log_damage(hostile: Hostile) -> None:
    one_line_naming(hostile, hostile.job, "record frame is damaged")


@when(parsers.parse("the job is stopped with a grace of {grace:g} second"))
def _stop_job(hostile: Hostile, grace: float) -> None:
    request = job_pb2.StopRequest(uuid=hostile.job)
    request.grace.FromNanoseconds(int(grace * 1e9))
    hostile.notes["stop"] = hostile.srv.stub().Stop(request, timeout=60).job


@then(parsers.re(r"the job is (?P<state>[A-Z]+)$"))
def _job_is(hostile: Hostile, state: str) -> None:
    assert hostile.srv.status(hostile.job).status == state


@then("its output holds every line it printed, in order, and ends without error")
def _every_line(hostile: Hostile) -> None:
    output = hostile.srv.output(hostile.job)
    assert consecutive_lines(output) and output.count(b"\n") > 10, output[-300:]


# ---- a damaged database -----------------------------------------------------------------------


@given(
    parsers.parse(
        "the admin has run {jobs:d} jobs printing {count:d} numbered lines each to their end"
    )
)
def _ran_several(hostile: Hostile, jobs: int, count: int) -> None:
    server = hostile.srv
    argv = server.marked(LINES.format(count=count, every=0))
    with ThreadPoolExecutor(8) as pool:
        ran = list(pool.map(lambda _: server.start_job(argv), range(jobs)))
        ended = list(pool.map(server.wait_ended, ran))
    hostile.notes["finished"] = {s.uuid: (s.status, lines(count)) for s in ended}


@given("the server has been stopped with SIGTERM and started again")
def _restarted(hostile: Hostile) -> None:
    assert hostile.srv.terminate() == 0
    hostile.srv.start()


@given(
    parsers.parse(
        "the admin has started a job printing {count:d} numbered lines, one every {every:g} seconds"
    )
)
def _slow_printer(hostile: Hostile, count: int, every: float) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked(LINES.format(count=count, every=every)))
    hostile.notes["count"] = count


@when(
    "the server is killed with SIGKILL, jobs.db is cut to half its size, and the server is "
    "started again"
)
def _cut_db(hostile: Hostile) -> None:
    hostile.srv.kill9()
    cut_to_half(hostile.srv.state_dir / "jobs.db")
    restart(hostile)


@then("the server's log has one line saying jobs.db was damaged and moved aside")
def _log_db(hostile: Hostile) -> None:
    one_line_naming(hostile, "jobs.db is damaged", "moved aside")


@then("the damaged database is kept in the state directory")
def _db_kept(hostile: Hostile) -> None:
    assert list(hostile.srv.state_dir.glob("jobs.db.damaged-*")), "no damaged database kept"


@then(
    parsers.parse("the {count:d} finished jobs are listed as before, each with exactly its output")
)
def _as_before(hostile: Hostile, count: int) -> None:
    jobs = listed(hostile)
    assert len(hostile.notes["finished"]) == count
    for job, (state, output) in hostile.notes["finished"].items():
        assert job in jobs and jobs[job].status == state, (job, jobs.get(job))
        assert hostile.srv.output(job) == output


@then(parsers.parse("the running job ends EXITED with code 0, with exactly its {count:d} lines"))
def _running_ends(hostile: Hostile, count: int) -> None:
    status = hostile.srv.wait_ended(hostile.job)
    assert (status.status, status.exit_code) == ("EXITED", 0), status
    assert hostile.srv.output(hostile.job) == lines(count)


# ---- another cgroup parent --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _first_parent_cleared(hostile: Hostile) -> Iterator[None]:
    """A scenario that moved the server to another cgroup parent leaves nothing under the
    first one either (the launch_server teardown checks only the last)."""
    yield
    first = hostile.notes.get("first_parent")
    if first is None:
        return
    left = cgroup_dirs(first)
    for parent in left:  # clear it, so a failure here spoils no other scenario
        for child in Path(parent).iterdir():
            if child.is_dir():
                for pid in map(int, (child / "cgroup.procs").read_text().split()):
                    with contextlib.suppress(OSError):
                        fd = os.pidfd_open(pid)
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                        os.close(fd)
        time.sleep(0.2)
        for child in Path(parent).iterdir():
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        with contextlib.suppress(OSError):
            Path(parent).rmdir()
    assert not left, f"cgroups left under the first cgroup parent: {left}"


def change_parent(hostile: Hostile) -> None:
    server = hostile.srv
    hostile.notes["first_parent"] = server.cgroup_parent
    server.cgroup_parent = f"{server.cgroup_parent}-b"  # the teardown checks the new one


@when("the server is killed with SIGKILL and started again with another cgroup parent")
def _restart_other_parent(hostile: Hostile) -> None:
    hostile.srv.kill9()
    change_parent(hostile)
    mark_log(hostile)
    try:
        hostile.srv.start()
        hostile.notes["start_failed"] = None
    except AssertionError as exc:  # it did not print "server listening"
        hostile.notes["start_failed"] = str(exc)


@then("it exited 1, naming both cgroup parents and how to stop the launcher's jobs")
def _refused(hostile: Hostile) -> None:
    server = hostile.srv
    assert hostile.notes["start_failed"] is not None, "the server started"
    assert server.process is not None and server.process.returncode == 1
    line = one_line_naming(hostile, "error:")
    assert hostile.notes["first_parent"] in line and server.cgroup_parent in line, line
    assert "kill -TERM" in line, line


@when("the server is started again with its first cgroup parent")
def _first_parent_again(hostile: Hostile) -> None:
    hostile.srv.cgroup_parent = hostile.notes["first_parent"]
    restart(hostile)


@then("the job is listed RUNNING, with its peak memory measured")
def _measured(hostile: Hostile) -> None:
    status = hostile.srv.status(hostile.job)
    assert status.status == "RUNNING" and status.peak_memory_bytes > 0, status


@when(
    "the server and then its launcher are killed with SIGKILL, and the server is started "
    "again with another cgroup parent"
)
def _both_killed_other_parent(hostile: Hostile) -> None:
    kill_server_and_launcher(hostile)
    change_parent(hostile)
    restart(hostile)


@then("the job is LOST, its reason saying its remaining processes were killed")
def _lost_killed(hostile: Hostile) -> None:
    status = hostile.srv.status(hostile.job)
    assert status.status == "LOST", status
    assert "remaining processes were killed" in status.reason, status.reason


@then("no process of the job is alive, and nothing is left under the first cgroup parent")
def _first_parent_clear(hostile: Hostile) -> None:
    assert marked_processes(hostile.srv.marker) == []
    assert cgroup_dirs(hostile.notes["first_parent"]) == []


@then("nothing is left under the first cgroup parent")
def _first_parent_empty(hostile: Hostile) -> None:
    eventually(lambda: cgroup_dirs(hostile.notes["first_parent"]) == [], 10,
               "the first cgroup parent to be removed")


@then("a job started now runs in a cgroup under the new cgroup parent")
def _new_parent(hostile: Hostile) -> None:
    server = hostile.srv
    job = server.start_job(server.marked("exec sleep 30"))
    assert job in server.job_cgroups(), server.job_cgroups()
    server.stub().Stop(job_pb2.StopRequest(uuid=job), timeout=60)


@then("the server's log says the launcher was replaced")
def _log_replaced(hostile: Hostile) -> None:
    one_line_naming(hostile, "runs no job: replacing it")


# ---- a Stop racing an exit ----------------------------------------------------------------------


@when(
    parsers.parse(
        "the launcher is stopped with SIGSTOP for {frozen:g} seconds, and jobmgr-client stop is "
        "run on the job {after:g} second in"
    )
)
def _stop_while_frozen(hostile: Hostile, frozen: float, after: float) -> None:
    server = hostile.srv
    began = time.monotonic()
    signal_launcher(server, signal.SIGSTOP)
    result: dict[str, object] = {}
    time.sleep(after)
    stopper = threading.Thread(
        target=lambda: result.update(stop=run_client(server, "stop", hostile.job))
    )
    stopper.start()
    time.sleep(max(0.0, frozen - (time.monotonic() - began)))
    signal_launcher(server, signal.SIGCONT)
    stopper.join(60)
    hostile.notes["stop_cli"] = result["stop"]


@then("jobmgr-client stop printed that the job had already ended: EXITED with code 7")
def _had_ended(hostile: Hostile) -> None:
    done = hostile.notes["stop_cli"]
    expected = f"job {hostile.job} had already ended: EXITED with code 7\n".encode()
    assert (done.returncode, done.stdout) == (0, expected), done


@when(
    parsers.parse(
        '{count:d} jobs running "sh -c \'sleep 0.2; exit 7\'" are each stopped between 0.1 and '
        "0.3 seconds after they start"
    )
)
def _stop_races(hostile: Hostile, count: int) -> None:
    server = hostile.srv
    rng = random.Random(count)

    def race(_: int) -> tuple[str, int, int, str]:
        job = server.start_job(["sh", "-c", "sleep 0.2; exit 7", server.marker])
        time.sleep(rng.uniform(0.1, 0.3))
        reply = server.stub().Stop(job_pb2.StopRequest(uuid=job), timeout=60).job
        status = server.status(job)
        return (status.status, status.exit_code, status.signal, reply.status)

    with ThreadPoolExecutor(8) as pool:
        hostile.notes["races"] = list(pool.map(race, range(count)))


@then("each job is either EXITED with code 7, its Stop reply saying so, or STOPPED by signal 15")
def _race_outcomes(hostile: Hostile) -> None:
    races = hostile.notes["races"]
    wrong = [
        r for r in races if r not in (("EXITED", 7, 0, "EXITED"), ("STOPPED", -1, 15, "STOPPED"))
    ]
    exited = sum(1 for r in races if r[0] == "EXITED")
    report(f"stop races: {exited} ended by themselves, {len(races) - exited} stopped")
    assert not wrong, wrong[:10]


@then("both endings happened")
def _both_endings(hostile: Hostile) -> None:
    states = {r[0] for r in hostile.notes["races"]}
    assert states == {"EXITED", "STOPPED"}, states


# ---- Start: deadlines, request ids, shutdown ----------------------------------------------------


@when(
    parsers.parse(
        'the launcher is stopped with SIGSTOP, a Start of "sleep 30" with a deadline of '
        "{deadline:g} second is sent, and the launcher is continued {later:g} seconds later"
    )
)
def _start_past_deadline(hostile: Hostile, deadline: float, later: float) -> None:
    server = hostile.srv
    signal_launcher(server, signal.SIGSTOP)
    began = time.monotonic()
    try:
        start_raw(server, server.marked("exec sleep 30"), timeout=deadline)
        hostile.notes["start_code"] = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        hostile.notes["start_code"] = exc.code()
    time.sleep(max(0.0, later - (time.monotonic() - began)))
    signal_launcher(server, signal.SIGCONT)


@then("the Start failed with DEADLINE_EXCEEDED")
def _deadline_exceeded(hostile: Hostile) -> None:
    assert hostile.notes["start_code"] == grpc.StatusCode.DEADLINE_EXCEEDED


@then(
    parsers.parse(
        "{seconds:d} seconds later no job has been started: none is listed and no process of it "
        "runs"
    )
)
def _none_started(hostile: Hostile, seconds: int) -> None:
    time.sleep(seconds)
    assert listed(hostile) == {}
    assert marked_processes(hostile.srv.marker) == []


@when(parsers.parse('a Start of "sleep 30" with request id "{request_id}" is sent twice'))
def _start_twice(hostile: Hostile, request_id: str) -> None:
    server = hostile.srv
    argv = server.marked("exec sleep 30")
    hostile.notes["ids"] = [start_raw(server, argv, request_id) for _ in range(2)]


@then("both answers name the same job, and it is the only job listed")
def _same_job(hostile: Hostile) -> None:
    first, second = hostile.notes["ids"]
    assert first == second
    assert list(listed(hostile)) == [first]


@when(parsers.parse('a Start of "sleep 30" with request id "{request_id}" is sent'))
def _start_once(hostile: Hostile, request_id: str) -> None:
    server = hostile.srv
    hostile.notes["other"] = start_raw(server, server.marked("exec sleep 30"), request_id)


@then("it names another job")
def _another_job(hostile: Hostile) -> None:
    assert hostile.notes["other"] not in hostile.notes["ids"]
    assert len(listed(hostile)) == 2


@when(
    'the launcher is stopped with SIGSTOP, a Start of "sleep 60" is sent, the server gets '
    "SIGTERM, and the launcher is continued 1 second later"
)
def _start_at_shutdown(hostile: Hostile) -> None:
    server = hostile.srv
    server.list_ids()  # the channel is up, so the Start goes out at once
    signal_launcher(server, signal.SIGSTOP)
    launcher = server.launcher_pid()

    def start() -> None:
        try:
            server.start_job(server.marked("exec sleep 60"))
        except grpc.RpcError:
            pass  # refused or cut short by the shutdown: either way no job may be left

    starter = threading.Thread(target=start)
    starter.start()
    time.sleep(1)  # the Start has reached the server, which passed it to the frozen launcher
    began = time.monotonic()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert launcher is not None
    signal_launcher(server, signal.SIGCONT)
    try:
        hostile.notes["exit"] = server.process.wait(30)
    except subprocess.TimeoutExpired:
        hostile.notes["exit"] = None  # the teardown stops it
    hostile.notes["exit_took"] = time.monotonic() - began
    starter.join(60)


@then(parsers.parse("the server exited 0 within {seconds:d} seconds"))
def _server_exited(hostile: Hostile, seconds: int) -> None:
    assert hostile.notes["exit"] == 0, hostile.srv.stderr[-2000:]
    assert hostile.notes["exit_took"] < seconds, hostile.notes["exit_took"]


@then("no process of any job is left")
def _no_process(hostile: Hostile) -> None:
    eventually(lambda: marked_processes(hostile.srv.marker) == [], 10, "the jobs' processes to end")
