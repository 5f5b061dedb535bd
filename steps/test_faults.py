"""Steps for features/faults.feature: faults injected into a real jobmgr-server and launcher."""

from __future__ import annotations

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

from harness.cgroups import job_dirs, parent_dirs, remove_all
from harness.figures import report
from harness.poll import eventually
from harness.procs import marked_processes
from harness.server import ServerDidNotStart, ServerProgram
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
from ._server_steps import mark_log, new_log
from .fixtures_scenario import Scenario
from .fixtures_server import LaunchServer

scenarios("faults.feature")


def state(status: job_pb2.StatusResponse) -> str:
    """The job's state in jobmgr's words: RUNNING, EXITED, STOPPED, FAILED or LOST."""
    return job_pb2.JobState.Name(status.state).removeprefix("JOB_STATE_")


def log_path(scenario: Scenario, job: str | None = None) -> Path:
    return scenario.program.state_dir / "jobs" / f"{job or scenario.job}.log"


def restart(scenario: Scenario) -> None:
    mark_log(scenario)
    scenario.program.start()


def kill_server_and_launcher(scenario: Scenario) -> float:
    """SIGKILL the server, then its launcher; when the launcher died (wall clock)."""
    scenario.program.kill9_with_launcher()
    return time.time()


def listed(scenario: Scenario) -> dict[str, job_pb2.StatusResponse]:
    reply = scenario.program.stub().List(job_pb2.ListRequest(), timeout=30)
    return {job.uuid: job for job in reply.jobs}


def one_line_naming(scenario: Scenario, *words: str) -> str:
    """The one line of the server's new log holding every word, RPC lines aside (a call that
    failed meanwhile repeats the reason in its error field); fails unless exactly one."""
    lines = [line for line in new_log(scenario).splitlines() if " rpc method=" not in line]
    found = [line for line in lines if all(w in line for w in words)]
    assert len(found) == 1, f"{len(found)} log lines hold {words}:\n{new_log(scenario)[-3000:]}"
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
    scenario: Scenario,
    pid_max: int,
) -> None:
    scenario.server = launch_pidns_server(pid_max=pid_max)


@when(
    parsers.parse(
        '{count:d} jobs running "true" are started, {width:d} at a time, each followed to its end'
    )
)
def _many_true(scenario: Scenario, count: int, width: int) -> None:
    server = scenario.program

    def one(_: int) -> str:
        job = server.start_job(["true"])
        try:
            server.output(job, timeout=30)
        except grpc.RpcError as exc:
            scenario.notes.setdefault("unfinished", []).append(f"{job}: {exc.code().name}")
        return job

    began = time.monotonic()
    with ThreadPoolExecutor(width) as pool:
        scenario.notes["jobs"] = list(pool.map(one, range(count)))
    report(f"pid reuse: {count} jobs, {width} at a time, in {time.monotonic() - began:.1f}s")


@then(parsers.parse("all {count:d} ended EXITED with code 0, and none is left RUNNING"))
def _all_exited(scenario: Scenario, count: int) -> None:
    jobs = listed(scenario)
    wrong = [
        f"{job}: {state(jobs[job])} {jobs[job].exit_code}"
        for job in scenario.notes["jobs"]
        if (state(jobs[job]), jobs[job].exit_code) != ("EXITED", 0)
    ]
    assert len(scenario.notes["jobs"]) == count
    assert not wrong, f"{len(wrong)} of {count} jobs did not end EXITED 0: {wrong[:5]}"
    assert not scenario.notes.get("unfinished"), scenario.notes["unfinished"][:5]


@when(
    parsers.parse(
        '{count:d} jobs running "sleep 60" are started and each is stopped with a grace of '
        "{grace:g} second"
    )
)
def _stop_many(scenario: Scenario, count: int, grace: float) -> None:
    server = scenario.program
    jobs = [server.start_job(server.marked("exec sleep 60")) for _ in range(count)]

    def stop(job: str) -> str:
        request = job_pb2.StopRequest(uuid=job)
        request.grace.FromNanoseconds(int(grace * 1e9))
        return state(server.stub().Stop(request, timeout=60).job)

    with ThreadPoolExecutor(count) as pool:
        scenario.notes["stopped"] = list(pool.map(stop, jobs))


@then(parsers.parse("all {count:d} ended STOPPED"))
def _all_stopped(scenario: Scenario, count: int) -> None:
    assert scenario.notes["stopped"] == ["STOPPED"] * count, scenario.notes["stopped"]


@when("the server is stopped with SIGTERM")
def _sigterm(scenario: Scenario) -> None:
    began = time.monotonic()
    scenario.notes["exit"] = scenario.program.terminate()
    scenario.notes["exit_took"] = time.monotonic() - began


@then(parsers.parse("it exited 0 within {seconds:d} seconds"))
def _exited_in(scenario: Scenario, seconds: int) -> None:
    assert scenario.notes["exit"] == 0, scenario.program.stderr[-2000:]
    assert scenario.notes["exit_took"] < seconds, scenario.notes["exit_took"]


@then(
    parsers.parse(
        "no canary process got a signal, of more than {count:d} that ran on recycled pids"
    )
)
def _canary(scenario: Scenario, count: int) -> None:
    server = scenario.program
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
def _fast_printer(scenario: Scenario, count: int) -> None:
    server = scenario.program
    scenario.job = server.start_job(server.marked(LINES.format(count=count, every=0.001)))
    scenario.notes["count"] = count


@given(parsers.parse("the admin has started a job sleeping {seconds:d} seconds"))
def _sleeper(scenario: Scenario, seconds: int) -> None:
    scenario.job = scenario.program.start_job(scenario.program.marked(f"exec sleep {seconds}"))


@given(parsers.parse("the admin has also started a job sleeping {seconds:d} seconds"))
def _another_sleeper(scenario: Scenario, seconds: int) -> None:
    job = scenario.program.start_job(scenario.program.marked(f"exec sleep {seconds}"))
    scenario.notes.setdefault("others", []).append(job)


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
def _writer(scenario: Scenario, mib: int) -> None:
    script = WRITER.format(seed=mib, chunks=mib * 16)
    job = scenario.program.start_job(["python3", "-c", script, scenario.program.marker])
    scenario.notes["writer"] = (job, random.Random(mib).randbytes(mib * 1024 * 1024))


@then(parsers.parse("the other job's output is exactly its {mib:d} MiB"))
def _writer_whole(scenario: Scenario, mib: int) -> None:
    job, expected = scenario.notes["writer"]
    status = scenario.program.wait_ended(job)
    assert (state(status), status.exit_code) == ("EXITED", 0), status
    output = scenario.program.output(job)
    assert len(output) == len(expected) == mib * 1024 * 1024, len(output)
    assert output == expected, "the bytes differ"


@given(
    parsers.parse(
        "the admin has started a job that sleeps {seconds:g} seconds, then exits {code:d}"
    )
)
def _sleeps_then_exits(scenario: Scenario, seconds: float, code: int) -> None:
    server = scenario.program
    scenario.job = server.start_job(server.marked(f"sleep {seconds}; exit {code}"))


@given("jobmgr-client follows its output, and a client watches the server's health")
def _follow_and_watch(scenario: Scenario) -> None:
    scenario.notes["follower"] = Follower(scenario.program, scenario.job)
    scenario.notes["health"] = HealthWatcher(scenario.program)
    mark_log(scenario)


@when(parsers.parse("the launcher is killed with SIGKILL once the job has printed {count:d} lines"))
def _kill_launcher(scenario: Scenario, count: int) -> None:
    scenario.notes["follower"].wait_lines(count)
    scenario.notes["since"] = time.monotonic()
    scenario.notes["old_launcher"] = signal_launcher(scenario.program, signal.SIGKILL)


@when(
    parsers.parse("the launcher is stopped with SIGSTOP once the job has printed {count:d} lines")
)
def _stop_launcher(scenario: Scenario, count: int) -> None:
    server = scenario.program
    primed = scenario.notes["primed"] = {  # ready before the freeze, to call within it
        "start": PrimedClient(server, "start", "--", "true"),
        "stop": PrimedClient(server, "stop", scenario.notes["others"][0]),
    }
    for client in primed.values():
        client.wait_ready()
    scenario.notes["follower"].wait_lines(count)
    scenario.notes["since"] = time.monotonic()
    scenario.notes["old_launcher"] = signal_launcher(scenario.program, signal.SIGSTOP)


@when("jobmgr-client start and jobmgr-client stop are run while it is frozen")
def _cli_while_frozen(scenario: Scenario) -> None:
    clients = scenario.notes.pop("primed")
    for client in clients.values():
        client.go()
    scenario.notes["frozen_cli"] = {name: client.result() for name, client in clients.items()}


@then("both failed, saying what became of the job launcher, not that the server cannot be reached")
def _both_failed(scenario: Scenario) -> None:
    for name, done in scenario.notes["frozen_cli"].items():
        stderr = done.stderr.decode()
        assert done.returncode == 1, (name, done.returncode, stderr)
        assert stderr.startswith("error: the job launcher"), (name, stderr)
        assert "cannot connect" not in stderr, (name, stderr)
    assert scenario.program.status(scenario.notes["others"][0]).state == job_pb2.JOB_STATE_RUNNING


@then(
    parsers.parse(
        "within {seconds:d} seconds health said NOT_SERVING, then SERVING again, with a new "
        "launcher"
    )
)
def _health_bounced(scenario: Scenario, seconds: int) -> None:
    watcher: HealthWatcher = scenario.notes["health"]
    eventually(
        lambda: watcher.went_down_and_up(scenario.notes["since"]) is not None,
        30,
        "health to go NOT_SERVING and back",
    )
    down, up = watcher.went_down_and_up(scenario.notes["since"]) or (0.0, 0.0)
    report(f"launcher fault: NOT_SERVING after {down:.3f}s, SERVING again after {up:.3f}s")
    assert down < seconds, down
    new = scenario.program.launcher_pid()
    assert new is not None and new != scenario.notes["old_launcher"]
    watcher.close()


@then("the server's log has one line saying the launcher died, killed by signal 9")
def _log_died(scenario: Scenario) -> None:
    pid = scenario.notes["old_launcher"]
    one_line_naming(scenario, f"the job launcher (pid {pid}) died (killed by signal 9)")


@then("the server's log has one line saying the launcher froze and was killed")
def _log_froze(scenario: Scenario) -> None:
    pid = scenario.notes["old_launcher"]
    one_line_naming(scenario, f"the job launcher (pid {pid}) froze", "and was killed")


@then(parsers.parse("the follower printed exactly the {count:d} lines and exited 0"))
def _follower_whole(scenario: Scenario, count: int) -> None:
    code, stdout, stderr = scenario.notes["follower"].finish()
    assert (code, stderr) == (0, b""), (code, stderr)
    printed = stdout.count(b"\n")
    assert stdout == lines(count), f"{printed} lines, not the {count} printed"


@then(
    parsers.re(r"the job is (?P<expected>[A-Z]+) with code (?P<code>\d+)$"),
    converters={"code": int},
)
def _job_ended(scenario: Scenario, expected: str, code: int) -> None:
    status = scenario.program.wait_ended(scenario.job)
    assert (state(status), status.exit_code) == (expected, code), status


@then("jobmgr-client stop stops the sleeping job now, and jobmgr-client start starts a job")
def _works_again(scenario: Scenario) -> None:
    stopped = run_client(scenario.program, "stop", scenario.notes["others"][0])
    assert stopped.returncode == 0 and b"STOPPED" in stopped.stdout, stopped
    started = run_client(scenario.program, "run", "--", "echo", "back")
    assert (started.returncode, started.stdout) == (0, b"back\n"), started


# ---- LOST with its true time ------------------------------------------------------------------


@given(
    parsers.parse(
        "the admin has started a job printing a numbered line every {every:g} seconds, without end"
    )
)
def _forever(scenario: Scenario, every: float) -> None:
    scenario.job = scenario.program.start_job(scenario.program.marked(FOREVER.format(every=every)))
    job, server = scenario.job, scenario.program

    def printed() -> bool:  # lines, not log bytes: a line's frames take more than its bytes
        return server.output(job, follow=False).count(b"\n") >= 12

    eventually(printed, 10, "the job's first 12 lines")


@when(
    parsers.parse(
        "the server and then its launcher are killed with SIGKILL, and the server is started "
        "again {seconds:d} seconds later"
    )
)
def _both_killed_later(scenario: Scenario, seconds: int) -> None:
    scenario.notes["killed_at"] = kill_server_and_launcher(scenario)
    time.sleep(seconds)
    restart(scenario)


@then(
    parsers.parse(
        "the job is LOST, ended within {seconds:d} seconds of the kill, its reason naming the "
        "launcher"
    )
)
def _lost_in_time(scenario: Scenario, seconds: int) -> None:
    status = scenario.program.status(scenario.job)
    assert state(status) == "LOST", status
    ended = status.ended_at.ToNanoseconds() / 1e9
    report(f"LOST job: ended_at {ended - scenario.notes['killed_at']:+.2f}s from the kill")
    assert abs(ended - scenario.notes["killed_at"]) < seconds, (ended, scenario.notes["killed_at"])
    assert "launcher" in status.reason, status.reason


@then("no process of the job is alive, and none of its cgroups is left")
def _nothing_of_it(scenario: Scenario) -> None:
    assert marked_processes(scenario.program.marker) == []
    assert job_dirs(scenario.program.cgroup_parent, scenario.job) == []
    assert scenario.job not in scenario.program.job_cgroups()


@then(
    "jobmgr-client output prints its lines, then says on stderr that the job was lost, and exits 1"
)
def _follower_told(scenario: Scenario) -> None:
    done = run_client(scenario.program, "output", scenario.job)
    assert done.returncode == 1, done
    assert consecutive_lines(done.stdout) and done.stdout.count(b"\n") >= 10, done.stdout[-200:]
    assert re.fullmatch(rb"error: job \S+: the job was lost: .*launcher.*\n", done.stderr), done


# ---- damaged logs -----------------------------------------------------------------------------


@given(parsers.parse("the admin has run a job printing {count:d} numbered lines to its end"))
def _ran_lines(scenario: Scenario, count: int) -> None:
    server = scenario.program
    scenario.job = server.start_job(server.marked(LINES.format(count=count, every=0)))
    status = server.wait_ended(scenario.job)
    assert (state(status), status.exit_code) == ("EXITED", 0)
    scenario.notes["count"] = count


DAMAGE = {"8 zero bytes": bytes(8), "32 bytes of garbage": bytes(random.Random(7).randbytes(32))}


@when(
    parsers.parse(
        "the server and then its launcher are killed with SIGKILL, {damage} are written at the "
        "head of the job's log, and the server is started again"
    )
)
def _damage_finished(scenario: Scenario, damage: str) -> None:
    kill_server_and_launcher(scenario)
    damage_head(log_path(scenario), DAMAGE[damage])
    restart(scenario)


@when(
    "32 bytes of garbage are written at the head of its log, and the server is killed with "
    "SIGKILL and started again"
)
def _damage_running(scenario: Scenario) -> None:
    damage_head(log_path(scenario), DAMAGE["32 bytes of garbage"])
    scenario.program.kill9()
    restart(scenario)


@when("the server is killed with SIGKILL and started again")
def _kill_restart(scenario: Scenario) -> None:
    scenario.program.kill9()
    restart(scenario)


@then(parsers.parse("the job is listed {expected} with code {code:d}"))
def _listed_with_code(scenario: Scenario, expected: str, code: int) -> None:
    job = listed(scenario).get(scenario.job)
    assert job is not None, "the job is not listed"
    assert (state(job), job.exit_code) == (expected, code), job


@then(parsers.parse("the job is listed {expected}, with its command"))
def _listed_with_command(scenario: Scenario, expected: str) -> None:
    job = listed(scenario).get(scenario.job)
    assert job is not None, "the job is not listed"
    assert state(job) == expected, job
    assert list(job.argv)[:2] == ["sh", "-c"], job.argv


@then("its status reason says its log's record frame is damaged")
def _reason_damaged(scenario: Scenario) -> None:
    assert "record frame is damaged" in scenario.program.status(scenario.job).reason


@then(parsers.parse("its output is exactly its {count:d} lines, and ends without error"))
def _exact_output(scenario: Scenario, count: int) -> None:
    assert scenario.program.output(scenario.job) == lines(count)


@then("the server's log has one line naming the job and its damaged record frame")
def _log_damage(scenario: Scenario) -> None:
    one_line_naming(scenario, scenario.job, "record frame is damaged")


@when(parsers.parse("the job is stopped with a grace of {grace:g} second"))
def _stop_job(scenario: Scenario, grace: float) -> None:
    request = job_pb2.StopRequest(uuid=scenario.job)
    request.grace.FromNanoseconds(int(grace * 1e9))
    scenario.notes["stop"] = scenario.program.stub().Stop(request, timeout=60).job


@then(parsers.re(r"the job is (?P<expected>[A-Z]+)$"))
def _job_is(scenario: Scenario, expected: str) -> None:
    assert state(scenario.program.status(scenario.job)) == expected


@then("its output holds every line it printed, in order, and ends without error")
def _every_line(scenario: Scenario) -> None:
    output = scenario.program.output(scenario.job)
    assert consecutive_lines(output) and output.count(b"\n") > 10, output[-300:]


# ---- a damaged database -----------------------------------------------------------------------


@given(
    parsers.parse(
        "the admin has run {jobs:d} jobs printing {count:d} numbered lines each to their end"
    )
)
def _ran_several(scenario: Scenario, jobs: int, count: int) -> None:
    server = scenario.program
    argv = server.marked(LINES.format(count=count, every=0))
    with ThreadPoolExecutor(8) as pool:
        ran = list(pool.map(lambda _: server.start_job(argv), range(jobs)))
        ended = list(pool.map(server.wait_ended, ran))
    scenario.notes["finished"] = {s.uuid: (state(s), lines(count)) for s in ended}


@given("the server has been stopped with SIGTERM and started again")
def _restarted(scenario: Scenario) -> None:
    assert scenario.program.terminate() == 0
    scenario.program.start()


@given(
    parsers.parse(
        "the admin has started a job printing {count:d} numbered lines, one every {every:g} seconds"
    )
)
def _slow_printer(scenario: Scenario, count: int, every: float) -> None:
    server = scenario.program
    scenario.job = server.start_job(server.marked(LINES.format(count=count, every=every)))
    scenario.notes["count"] = count


@when(
    "the server is killed with SIGKILL, jobs.db is cut to half its size, and the server is "
    "started again"
)
def _cut_db(scenario: Scenario) -> None:
    scenario.program.kill9()
    cut_to_half(scenario.program.state_dir / "jobs.db")
    restart(scenario)


@then("the server's log has one line saying jobs.db was damaged and moved aside")
def _log_db(scenario: Scenario) -> None:
    one_line_naming(scenario, "jobs.db is damaged", "moved aside")


@then("the damaged database is kept in the state directory")
def _db_kept(scenario: Scenario) -> None:
    assert list(scenario.program.state_dir.glob("jobs.db.damaged-*")), "no damaged database kept"


@then(
    parsers.parse("the {count:d} finished jobs are listed as before, each with exactly its output")
)
def _as_before(scenario: Scenario, count: int) -> None:
    jobs = listed(scenario)
    assert len(scenario.notes["finished"]) == count
    for job, (ended, output) in scenario.notes["finished"].items():
        assert job in jobs and state(jobs[job]) == ended, (job, jobs.get(job))
        assert scenario.program.output(job) == output


@then(parsers.parse("the running job ends EXITED with code 0, with exactly its {count:d} lines"))
def _running_ends(scenario: Scenario, count: int) -> None:
    status = scenario.program.wait_ended(scenario.job)
    assert (state(status), status.exit_code) == ("EXITED", 0), status
    assert scenario.program.output(scenario.job) == lines(count)


# ---- another cgroup parent --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _first_parent_cleared(scenario: Scenario) -> Iterator[None]:
    """A scenario that moved the server to another cgroup parent leaves nothing under the
    first one either (the launch_server teardown checks only the last)."""
    yield
    first = scenario.notes.get("first_parent")
    if first is None:
        return
    left = parent_dirs(first)
    if left:  # clear it, so a failure here spoils no other scenario
        remove_all(first)
    assert not left, f"cgroups left under the first cgroup parent: {left}"


def move_to_parent(server: ServerProgram, parent: str) -> None:
    """Give the server another --cgroup-parent from its next start (the teardown checks the
    parent it was given last)."""
    flag = server.argv.index("--cgroup-parent")
    server.argv[flag + 1] = server.cgroup_parent = parent


def change_parent(scenario: Scenario) -> None:
    server = scenario.program
    scenario.notes["first_parent"] = server.cgroup_parent
    move_to_parent(server, f"{server.cgroup_parent}-b")


@when("the server is killed with SIGKILL and started again with another cgroup parent")
def _restart_other_parent(scenario: Scenario) -> None:
    scenario.program.kill9()
    change_parent(scenario)
    mark_log(scenario)
    try:
        scenario.program.start()
        scenario.notes["start_failed"] = None
    except ServerDidNotStart as exc:
        scenario.notes["start_failed"] = str(exc)


@then("it exited 1, naming both cgroup parents and how to stop the launcher's jobs")
def _refused(scenario: Scenario) -> None:
    server = scenario.program
    assert scenario.notes["start_failed"] is not None, "the server started"
    assert server.process is not None and server.process.returncode == 1
    line = one_line_naming(scenario, "error:")
    assert scenario.notes["first_parent"] in line and server.cgroup_parent in line, line
    assert "kill -TERM" in line, line


@when("the server is started again with its first cgroup parent")
def _first_parent_again(scenario: Scenario) -> None:
    move_to_parent(scenario.program, scenario.notes["first_parent"])
    restart(scenario)


@then("the job is listed RUNNING, with its peak memory measured")
def _measured(scenario: Scenario) -> None:
    status = scenario.program.status(scenario.job)
    assert state(status) == "RUNNING" and status.peak_memory_bytes > 0, status


@when(
    "the server and then its launcher are killed with SIGKILL, and the server is started "
    "again with another cgroup parent"
)
def _both_killed_other_parent(scenario: Scenario) -> None:
    kill_server_and_launcher(scenario)
    change_parent(scenario)
    restart(scenario)


@then("the job is LOST, its reason saying its remaining processes were killed")
def _lost_killed(scenario: Scenario) -> None:
    status = scenario.program.status(scenario.job)
    assert state(status) == "LOST", status
    assert "remaining processes were killed" in status.reason, status.reason


@then("no process of the job is alive, and nothing is left under the first cgroup parent")
def _first_parent_clear(scenario: Scenario) -> None:
    assert marked_processes(scenario.program.marker) == []
    assert parent_dirs(scenario.notes["first_parent"]) == []


@then("nothing is left under the first cgroup parent")
def _first_parent_empty(scenario: Scenario) -> None:
    first = scenario.notes["first_parent"]
    eventually(lambda: parent_dirs(first) == [], 10, "the first cgroup parent to be removed")


@then("a job started now runs in a cgroup under the new cgroup parent")
def _new_parent(scenario: Scenario) -> None:
    server = scenario.program
    job = server.start_job(server.marked("exec sleep 30"))
    assert job in server.job_cgroups(), server.job_cgroups()
    server.stub().Stop(job_pb2.StopRequest(uuid=job), timeout=60)


@then("the server's log says the launcher was replaced")
def _log_replaced(scenario: Scenario) -> None:
    one_line_naming(scenario, "runs no job: replacing it")


# ---- a Stop racing an exit ----------------------------------------------------------------------


@when(
    parsers.parse(
        "the launcher is stopped with SIGSTOP for {frozen:g} seconds, and jobmgr-client stop is "
        "run on the job {after:g} second in"
    )
)
def _stop_while_frozen(scenario: Scenario, frozen: float, after: float) -> None:
    server = scenario.program
    began = time.monotonic()
    signal_launcher(server, signal.SIGSTOP)
    result: dict[str, object] = {}
    time.sleep(after)
    stopper = threading.Thread(
        target=lambda: result.update(stop=run_client(server, "stop", scenario.job))
    )
    stopper.start()
    time.sleep(max(0.0, frozen - (time.monotonic() - began)))
    signal_launcher(server, signal.SIGCONT)
    stopper.join(60)
    scenario.notes["stop_cli"] = result["stop"]


@then("jobmgr-client stop printed that the job had already ended: EXITED with code 7")
def _had_ended(scenario: Scenario) -> None:
    done = scenario.notes["stop_cli"]
    expected = f"job {scenario.job} had already ended: EXITED with code 7\n".encode()
    assert (done.returncode, done.stdout) == (0, expected), done


@when(
    parsers.parse(
        "{count:d} jobs running \"sh -c 'sleep 0.2; exit 7'\" are each stopped between 0.1 and "
        "0.3 seconds after they start"
    )
)
def _stop_races(scenario: Scenario, count: int) -> None:
    server = scenario.program
    rng = random.Random(count)

    def race(_: int) -> tuple[str, int, int, str]:
        job = server.start_job(["sh", "-c", "sleep 0.2; exit 7", server.marker])
        time.sleep(rng.uniform(0.1, 0.3))
        reply = server.stub().Stop(job_pb2.StopRequest(uuid=job), timeout=60).job
        status = server.status(job)
        return (state(status), status.exit_code, status.signal, state(reply))

    with ThreadPoolExecutor(8) as pool:
        scenario.notes["races"] = list(pool.map(race, range(count)))


@then("each job is either EXITED with code 7, its Stop reply saying so, or STOPPED by signal 15")
def _race_outcomes(scenario: Scenario) -> None:
    races = scenario.notes["races"]
    wrong = [
        r for r in races if r not in (("EXITED", 7, 0, "EXITED"), ("STOPPED", -1, 15, "STOPPED"))
    ]
    exited = sum(1 for r in races if r[0] == "EXITED")
    report(f"stop races: {exited} ended by themselves, {len(races) - exited} stopped")
    assert not wrong, wrong[:10]


@then("both endings happened")
def _both_endings(scenario: Scenario) -> None:
    states = {r[0] for r in scenario.notes["races"]}
    assert states == {"EXITED", "STOPPED"}, states


# ---- Start: deadlines, request ids, shutdown ----------------------------------------------------


@when(
    parsers.parse(
        'the launcher is stopped with SIGSTOP, a Start of "sleep 30" with a deadline of '
        "{deadline:g} second is sent, and the launcher is continued {later:g} seconds later"
    )
)
def _start_past_deadline(scenario: Scenario, deadline: float, later: float) -> None:
    server = scenario.program
    signal_launcher(server, signal.SIGSTOP)
    began = time.monotonic()
    try:
        start_raw(server, server.marked("exec sleep 30"), timeout=deadline)
        scenario.notes["start_code"] = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        scenario.notes["start_code"] = exc.code()
    time.sleep(max(0.0, later - (time.monotonic() - began)))
    signal_launcher(server, signal.SIGCONT)


@then("the Start failed with DEADLINE_EXCEEDED")
def _deadline_exceeded(scenario: Scenario) -> None:
    assert scenario.notes["start_code"] == grpc.StatusCode.DEADLINE_EXCEEDED


@then(
    parsers.parse(
        "{seconds:d} seconds later no job has been started: none is listed and no process of it "
        "runs"
    )
)
def _none_started(scenario: Scenario, seconds: int) -> None:
    time.sleep(seconds)
    assert listed(scenario) == {}
    assert marked_processes(scenario.program.marker) == []


@when(parsers.parse('a Start of "sleep 30" with request id "{request_id}" is sent twice'))
def _start_twice(scenario: Scenario, request_id: str) -> None:
    server = scenario.program
    argv = server.marked("exec sleep 30")
    scenario.notes["ids"] = [start_raw(server, argv, request_id) for _ in range(2)]


@then("both answers name the same job, and it is the only job listed")
def _same_job(scenario: Scenario) -> None:
    first, second = scenario.notes["ids"]
    assert first == second
    assert list(listed(scenario)) == [first]


@when(parsers.parse('a Start of "sleep 30" with request id "{request_id}" is sent'))
def _start_once(scenario: Scenario, request_id: str) -> None:
    server = scenario.program
    scenario.notes["other"] = start_raw(server, server.marked("exec sleep 30"), request_id)


@then("it names another job")
def _another_job(scenario: Scenario) -> None:
    assert scenario.notes["other"] not in scenario.notes["ids"]
    assert len(listed(scenario)) == 2


@when(
    'the launcher is stopped with SIGSTOP, a Start of "sleep 60" is sent, the server gets '
    "SIGTERM, and the launcher is continued 1 second later"
)
def _start_at_shutdown(scenario: Scenario) -> None:
    server = scenario.program
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
    server.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert launcher is not None
    signal_launcher(server, signal.SIGCONT)
    try:
        scenario.notes["exit"] = server.wait(30)
    except subprocess.TimeoutExpired:
        scenario.notes["exit"] = None  # the teardown stops it
    scenario.notes["exit_took"] = time.monotonic() - began
    starter.join(60)


@then(parsers.parse("the server exited 0 within {seconds:d} seconds"))
def _server_exited(scenario: Scenario, seconds: int) -> None:
    assert scenario.notes["exit"] == 0, scenario.program.stderr[-2000:]
    assert scenario.notes["exit_took"] < seconds, scenario.notes["exit_took"]


@then("no process of any job is left")
def _no_process(scenario: Scenario) -> None:
    marker = scenario.program.marker
    eventually(lambda: marked_processes(marker) == [], 10, "the jobs' processes to end")
