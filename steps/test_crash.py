"""Steps for features/crash.feature."""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from pytest_bdd import given, parsers, scenarios, then, when

from harness.client import CLIENT_OPTIONS
from harness.figures import report
from harness.procs import alive, marked_processes
from harness.server import ServerProgram
from jobmgr.api import job_pb2, job_pb2_grpc

from .fixtures_scenario import Scenario

scenarios("crash.feature")

# Deterministic jobs: what each prints follows from its argv alone, so any job found after a
# crash, its start confirmed or not, can be checked byte for byte.
LINES = "i=0; while [ $i -lt {count} ]; do echo line-$i; i=$((i+1)); sleep {every}; done"
BYTES = "import random, sys; sys.stdout.buffer.write(random.Random({seed}).randbytes({size}))"
FORK_SETTLE = 0.5  # seconds; see _audit


def lines_job(server: ServerProgram, count: int, every: float) -> list[str]:
    return server.marked(LINES.format(count=count, every=every))


def bytes_job(server: ServerProgram, seed: int, size: int) -> list[str]:
    return ["python3", "-c", BYTES.format(seed=seed, size=size), server.marker]


def expected_output(argv: list[str]) -> bytes:
    """What a job of lines_job or bytes_job prints, from its argv."""
    if argv[0] == "sh":
        count = int(argv[2].split("-lt ")[1].split(" ")[0])
        return b"".join(b"line-%d\n" % i for i in range(count))
    seed = int(argv[2].split("Random(")[1].split(")")[0])
    size = int(argv[2].split("randbytes(")[1].split(")")[0])
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- one kill, watched closely ----------------------------------------------------------------


@given(
    parsers.parse(
        "the admin has started a job printing {count:d} numbered lines, one every {every:g} seconds"
    )
)
def _line_printer(scenario: Scenario, count: int, every: float) -> None:
    scenario.job = scenario.program.start_job(lines_job(scenario.program, count, every))
    scenario.notes["expected"] = expected_output(lines_job(scenario.program, count, every))


@when("a client follows its output, and the server is killed with SIGKILL while it does")
def _kill_while_following(scenario: Scenario) -> None:
    server = scenario.program
    # A channel of its own: kill9 closes the server's channels, which would cancel this call.
    channel = grpc.secure_channel(server.target, server.credentials(), options=CLIENT_OPTIONS)
    stream = job_pb2_grpc.JobManagerStub(channel).Output(
        job_pb2.OutputRequest(uuid=scenario.job), timeout=60
    )
    received = b""
    try:
        for message in stream:
            received += message.output
            if received.count(b"\n") >= 10 and server.running:
                server.kill9()
        scenario.notes["follow"] = (grpc.StatusCode.OK, received)
    except grpc.RpcError as exc:
        scenario.notes["follow"] = (exc.code(), received)
    finally:
        channel.close()


@then("the client's call failed with UNAVAILABLE")
def _follower_failed(scenario: Scenario) -> None:
    code, received = scenario.notes["follow"]
    assert code == grpc.StatusCode.UNAVAILABLE, (code, len(received))


@when("the server is started again on the same state dir")
def _restart(scenario: Scenario) -> None:
    scenario.program.start()


@then(parsers.parse("the job ends with exactly its {count:d} lines"))
def _whole(scenario: Scenario, count: int) -> None:
    server = scenario.program
    status = server.wait_ended(scenario.job)
    assert (status.state, status.exit_code) == (job_pb2.JOB_STATE_EXITED, 0), status
    assert server.output(scenario.job) == scenario.notes["expected"]


# ---- the loop ---------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the crash loop knows must hold, and what it found."""

    confirmed: set[str] = field(default_factory=set)
    finished: dict[str, tuple[str, int, int, str]] = field(default_factory=dict)
    unconfirmed: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    clean_truncations: list[str] = field(default_factory=list)
    spares: int = 0
    kills: int = 0


@when(
    parsers.parse(
        "{times:d} times over, with jobs running, being started and being followed, the server "
        "is killed with SIGKILL and started again"
    )
)
def _crash_loop(scenario: Scenario, times: int) -> None:
    ledger = Ledger(spares=len(scenario.program.job_cgroups()))
    server = scenario.program
    rng = random.Random(times)
    began = time.monotonic()
    for round_ in range(times):
        _round(server, ledger, rng, round_)
        server.start()
        _audit(server, ledger)
    report(
        f"crash loop: {ledger.kills} kills in {time.monotonic() - began:.1f}s, "
        f"{len(ledger.confirmed)} confirmed jobs, {len(ledger.unconfirmed)} started by a start "
        f"the kill cut short, {len(ledger.finished)} finished outputs checked after each restart"
    )
    scenario.notes["ledger"] = ledger


def _round(server: ServerProgram, ledger: Ledger, rng: random.Random, round_: int) -> None:
    """Start jobs, finish some, follow one, keep starting more, and kill the server."""
    sizes = [0, 1, 4096, 300_000]
    quick = [bytes_job(server, round_ * 100 + i, rng.choice(sizes)) for i in range(3)]
    ids = [server.start_job(argv) for argv in quick]
    ledger.confirmed.update(ids)
    runner_argv = lines_job(server, rng.randint(20, 60), 0.05)
    runner = server.start_job(runner_argv)
    ledger.confirmed.add(runner)
    for job in ids:
        status = server.wait_ended(job)
        ledger.finished[job] = _record(server, status)
    stop = threading.Event()
    whole = expected_output(runner_argv)
    followers = [threading.Thread(target=_follow, args=(server, runner, whole, ledger))]
    followers.append(threading.Thread(target=_keep_starting, args=(server, ledger, stop, round_)))
    for thread in followers:
        thread.start()
    time.sleep(rng.uniform(0.05, 0.6))
    server.kill9()
    ledger.kills += 1
    stop.set()
    for thread in followers:
        thread.join(30)
    _check_database(server, ledger)


def _record(server: ServerProgram, status: job_pb2.StatusResponse) -> tuple[str, int, int, str]:
    state = job_pb2.JobState.Name(status.state)
    return (state, status.exit_code, status.signal, sha(server.output(status.uuid)))


def _follow(server: ServerProgram, job: str, whole: bytes, ledger: Ledger) -> None:
    received = b""
    try:
        for message in server.stub().Output(job_pb2.OutputRequest(uuid=job), timeout=60):
            received += message.output
    except grpc.RpcError:
        return  # the server died under it: an error, as it should be
    except AssertionError:
        return  # the server was already gone
    if received != whole:
        ledger.clean_truncations.append(f"{job}: stream ended cleanly after {len(received)} bytes")


def _keep_starting(
    server: ServerProgram, ledger: Ledger, stop: threading.Event, round_: int
) -> None:
    """Start job after job until the server dies under one of the starts."""
    seed = 10_000 + round_ * 1000
    while not stop.is_set():
        seed += 1
        try:
            job = server.start_job(bytes_job(server, seed, 2048))
        except (grpc.RpcError, AssertionError):
            return
        ledger.confirmed.add(job)


def _check_database(server: ServerProgram, ledger: Ledger) -> None:
    """PRAGMA integrity_check on a copy of jobs.db (with its WAL), and every confirmed job in it."""
    with tempfile.TemporaryDirectory(prefix="h5-db-") as scratch:
        for suffix in ("", "-wal", "-shm"):
            source = server.state_dir / f"jobs.db{suffix}"
            if source.exists():
                shutil.copy(source, Path(scratch) / f"jobs.db{suffix}")
        db = sqlite3.connect(Path(scratch) / "jobs.db")
        try:
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
            stored = {row[0] for row in db.execute("SELECT id FROM jobs")}
        finally:
            db.close()
    if verdict != "ok":
        ledger.integrity.append(f"kill {ledger.kills}: {verdict}")
    lost = ledger.confirmed - stored
    if lost:
        ledger.integrity.append(f"kill {ledger.kills}: {len(lost)} confirmed jobs not in jobs.db")


def _audit(server: ServerProgram, ledger: Ledger) -> None:
    """After a restart: nothing confirmed is missing, nothing finished has changed, and every
    cgroup and process belongs to a running job."""
    listed = {job.uuid: job for job in server.stub().List(job_pb2.ListRequest(), timeout=30).jobs}
    for job in ledger.confirmed - set(listed):
        ledger.missing.append(f"after kill {ledger.kills}: {job} is not listed")
    ledger.unconfirmed.update(set(listed) - ledger.confirmed)
    for job, before in ledger.finished.items():
        if job in listed:
            after = _record(server, listed[job])
            if after != before:
                ledger.changed.append(f"after kill {ledger.kills}: {job} {before} -> {after}")
    running = {job for job, status in listed.items() if status.state == job_pb2.JOB_STATE_RUNNING}
    cgroups = server.job_cgroups()
    for name in cgroups & set(listed):
        if name not in running:
            ledger.orphans.append(f"after kill {ledger.kills}: cgroup of ended job {name}")
    spare = cgroups - set(listed)
    if len(spare) > ledger.spares + 1:
        ledger.orphans.append(f"after kill {ledger.kills}: {len(spare)} cgroups of no job")
    # A child shows the root cgroup for a moment while fork() sets it up, so a process outside
    # every running job's cgroup is looked at again before it counts as an orphan.
    suspects = [pid for pid in marked_processes(server.marker) if _outside(pid, running)]
    if suspects:
        time.sleep(FORK_SETTLE)
    for pid in suspects:
        where = _outside(pid, running)
        if where:
            owner = next((j for j in listed if j in where), None)
            state = job_pb2.JobState.Name(listed[owner].state) if owner else "not listed"
            cgroup = next((line for line in where.splitlines() if ":pids:" in line), where)
            ledger.orphans.append(
                f"after kill {ledger.kills}: process {pid} of no running job ({cgroup}: {state})"
            )


def _outside(pid: int, running: set[str]) -> str:
    """``pid``'s /proc cgroup lines if it is alive and in no running job's cgroup, else ""."""
    try:
        where = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""
    if not alive(pid) or any(job in where for job in running):
        return ""
    return where


# ---- the verdicts -----------------------------------------------------------------------------


def _ledger(scenario: Scenario) -> Ledger:
    ledger: Ledger = scenario.notes["ledger"]
    return ledger


# Each verdict: the ledger's list of what broke it, which must stay empty.
VERDICTS = {
    "after every restart each job whose start was confirmed was listed": "missing",
    "after every restart each finished job's status and output were exactly as before": "changed",
    "after every kill the database passed PRAGMA integrity_check and held every confirmed "
    "job": "integrity",
    "after every restart each job cgroup and each job process belonged to a running job": (
        "orphans"
    ),
    "no follower ever saw a truncated stream end cleanly": "clean_truncations",
}
for _phrase, _broken in VERDICTS.items():

    def _verdict(scenario: Scenario, _broken: str = _broken) -> None:
        broken: list[str] = getattr(_ledger(scenario), _broken)
        assert not broken, broken[:10]

    then(_phrase)(_verdict)


@then("every job ended with exactly the output it printed")
def _all_exact(scenario: Scenario) -> None:
    server = scenario.program
    ledger = _ledger(scenario)
    wrong = []
    for job in sorted(ledger.confirmed | ledger.unconfirmed):
        status = server.wait_ended(job, timeout=120)
        output = server.output(job)
        if (status.state, status.exit_code) != (job_pb2.JOB_STATE_EXITED, 0):
            state = job_pb2.JobState.Name(status.state)
            wrong.append(f"{job}: {state} exit {status.exit_code} ({status.reason})")
        elif output != (printed := expected_output(list(status.argv))):
            wrong.append(f"{job}: {len(output)} bytes, not the {len(printed)} it printed")
    report(f"crash loop: {len(ledger.confirmed | ledger.unconfirmed)} jobs checked byte for byte")
    assert not wrong, f"{len(wrong)} jobs lost output or were lost:\n" + "\n".join(wrong[:10])
