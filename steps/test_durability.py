"""Steps for features/durability.feature: crashes, restarts, retention, output cap, full disk."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from pytest_bdd import given, parsers, scenarios, then, when

from harness.cgroups import job_dirs, job_pids
from harness.poll import eventually
from harness.procs import alive, marked_processes
from jobmgr.api import job_pb2

from ._cli_steps import ran, run_client
from ._phrases import MiB
from .fixtures_scenario import Scenario
from .fixtures_server import LaunchServer

scenarios("durability.feature")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _status_json(scenario: Scenario) -> dict[str, object]:
    done = run_client(scenario, "admin", "status --json JOB")
    assert done.returncode == 0, done.stderr
    status: dict[str, object] = json.loads(done.stdout)
    return status


# ---- servers ----------------------------------------------------------------------------------


@given("the jobmgr-server program is running with its state dir on a 4 MiB tmpfs")
def _server_on_tmpfs(launch_server: LaunchServer, scenario: Scenario) -> None:
    scenario.server = launch_server(state_tmpfs_bytes=4 * MiB)


@given(
    "the jobmgr-server program, allowed to run jobs as root, is running with its state dir "
    "on a 4 MiB tmpfs"
)
def _root_server_on_tmpfs(launch_server: LaunchServer, scenario: Scenario) -> None:
    config = '[jobs]\nallowed_run_as = ["nobody", "root"]\n'
    scenario.server = launch_server(config=config, state_tmpfs_bytes=4 * MiB)


@when("jobmgr-server is killed with SIGKILL")
def _crash(scenario: Scenario) -> None:
    scenario.program.kill9()


@when("jobmgr-server is started again")
def _start_again(scenario: Scenario) -> None:
    scenario.program.start()


@when("jobmgr-server is killed with SIGKILL and started again")
def _crash_and_restart(scenario: Scenario) -> None:
    scenario.program.kill9()
    scenario.program.start()


@when("jobmgr-server and then its launcher are killed with SIGKILL")
def _crash_both(scenario: Scenario) -> None:
    scenario.program.kill9_with_launcher()


# ---- a job that goes on when told to ----------------------------------------------------------


@given(
    'the admin has started, as root, a job that prints "before", then "during" and "after" '
    "each when told to"
)
def _told_job(scenario: Scenario) -> None:
    # Files in the job's own /tmp tell it to go on and tell the test it has: the test reaches
    # them through /proc/PID/root, the job's view as its processes see it.
    tag = f"jobmgr-told-{uuid.uuid4().hex}"
    wait = "until [ -e /tmp/{0} ]; do sleep 0.05; done"
    script = "; ".join(
        [
            "echo before",
            wait.format("go-during"),
            "echo during",
            "touch /tmp/said-during",
            wait.format("go-after"),
            "echo after",
            "exit 7",
        ]
    )
    command = f"start --run-as root -- sh -c {json.dumps(script)} {tag}"
    done = run_client(scenario, "admin", command)
    assert done.returncode == 0, done.stderr
    scenario.job = done.stdout.decode().strip()
    scenario.notes["tag"] = tag


def _job_tmp(scenario: Scenario) -> Path:
    """The job's own /tmp, as the host reaches it."""
    pids = marked_processes(scenario.notes["tag"])
    assert pids, "the job's shell is not running"
    return Path(f"/proc/{pids[0]}/root/tmp")


@when('the job is told to print "during", and does')
def _go_during(scenario: Scenario) -> None:
    tmp = _job_tmp(scenario)
    (tmp / "go-during").touch()
    eventually((tmp / "said-during").exists, 20, "the job to print during")


@when('the job is told to print "after" and exit 7')
def _go_after(scenario: Scenario) -> None:
    (_job_tmp(scenario) / "go-after").touch()


@then(parsers.parse("jobmgr-client status says the job EXITED with code {code:d}"))
def _exited_with(scenario: Scenario, code: int) -> None:
    eventually(lambda: _status_json(scenario)["state"] != "RUNNING", 20, "the job to end")
    status = _status_json(scenario)
    assert (status["state"], status["exit_code"]) == ("EXITED", code), status


# ---- output and status across a crash ---------------------------------------------------------


@when("the admin has read the job's whole output and status with jobmgr-client")
def _read_all(scenario: Scenario) -> None:
    done = run_client(scenario, "admin", "output JOB")  # follows the job to its end
    assert done.returncode == 0, done.stderr
    scenario.notes["digests"] = (_digest(done.stdout), _digest(done.stderr))
    scenario.notes["sizes"] = (len(done.stdout), len(done.stderr))
    scenario.notes["status"] = _status_json(scenario)


@then("jobmgr-client output JOB gives the same stdout and stderr, byte for byte")
def _same_output(scenario: Scenario) -> None:
    done = run_client(scenario, "admin", "output JOB")
    assert done.returncode == 0, done.stderr
    assert (len(done.stdout), len(done.stderr)) == scenario.notes["sizes"]
    assert (_digest(done.stdout), _digest(done.stderr)) == scenario.notes["digests"]


@then(
    parsers.parse(
        "jobmgr-client status JOB --json gives the same status, EXITED with exit_code {code:d}"
    )
)
def _same_status(scenario: Scenario, code: int) -> None:
    status = _status_json(scenario)
    assert status == scenario.notes["status"], (status, scenario.notes["status"])
    assert (status["state"], status["exit_code"]) == ("EXITED", code), status


# ---- a lost job -------------------------------------------------------------------------------


@when("the job's processes are noted")
def _note_processes(scenario: Scenario) -> None:
    pids = set(job_pids(scenario.program.cgroup_parent, scenario.job))
    assert pids, "the job has no processes in its cgroups"
    scenario.notes["pids"] = pids


@then(parsers.parse('its status reason mentions "{word}"'))
def _reason_mentions(scenario: Scenario, word: str) -> None:
    reason = json.loads(ran(scenario).stdout)["reason"]
    assert word in reason, reason


@then("the job's processes are gone")
def _processes_gone(scenario: Scenario) -> None:
    left = {pid for pid in scenario.notes["pids"] if alive(pid)}
    assert not left, f"processes of the lost job still run: {left}"


@then("the job's cgroups are gone")
def _cgroups_gone(scenario: Scenario) -> None:
    assert job_dirs(scenario.program.cgroup_parent, scenario.job) == []


# ---- retention --------------------------------------------------------------------------------


@when(parsers.re(r"the admin runs (?P<commands>.+) to the end, in turn$"))
def _run_in_turn(scenario: Scenario, commands: str) -> None:
    jobs: dict[str, str] = scenario.notes.setdefault("jobs", {})
    for command in _quoted(commands):
        done = run_client(scenario, "admin", f"start -- {command}")
        assert done.returncode == 0, done.stderr
        scenario.job = jobs[command] = done.stdout.decode().strip()
        assert run_client(scenario, "admin", "output JOB").returncode == 0


@when(parsers.parse("{seconds:d} seconds pass"))
def _seconds_pass(seconds: int) -> None:
    time.sleep(seconds)


@then(parsers.re(r"jobmgr-client list shows only (?P<commands>.+)$"))
def _list_shows(scenario: Scenario, commands: str) -> None:
    done = run_client(scenario, "admin", "list --json")
    assert done.returncode == 0, done.stderr
    shown = [" ".join(job["argv"]) for job in json.loads(done.stdout)]
    assert shown == _quoted(commands), shown


@then(parsers.parse('the job "{command}" is not found, and its files are gone from the state dir'))
def _pruned(scenario: Scenario, command: str) -> None:
    job_id = scenario.notes["jobs"][command]
    done = run_client(scenario, "admin", f"status {job_id}")
    assert done.returncode == 1 and b"no job with id" in done.stderr, done
    left = list((scenario.program.state_dir / "jobs").glob(f"{job_id}*"))
    assert not left, left


def _quoted(text: str) -> list[str]:
    return [part.split('"')[1] for part in text.split(", ") for part in part.split(" and ")]


# ---- truncation -------------------------------------------------------------------------------


@when("the job's status says its output was truncated")
def _until_truncated(scenario: Scenario) -> None:
    eventually(lambda: bool(_status_json(scenario)["output_truncated"]), 20, "the output cap")


@then(
    parsers.parse(
        "the output stream holds {size:d} bytes of stdout and ends with a truncation notice"
    )
)
def _stream_truncated(scenario: Scenario, size: int) -> None:
    request = job_pb2.OutputRequest(uuid=scenario.job, no_follow=True)
    messages = list(scenario.server.stub("user").Output(request, timeout=10))
    stdout = b"".join(m.output for m in messages if m.stream == job_pb2.STREAM_STDOUT)
    assert len(stdout) == size, len(stdout)
    assert messages[-1].truncated and not messages[-1].output, messages[-1]
    assert not any(m.truncated for m in messages[:-1])


@then(parsers.parse("its stdout is {size:d} bytes long"))
def _stdout_size(scenario: Scenario, size: int) -> None:
    assert len(ran(scenario).stdout) == size, len(ran(scenario).stdout)


@then(parsers.parse("its stdout is shorter than {size:d} MiB"))
def _stdout_shorter(scenario: Scenario, size: int) -> None:
    assert 0 < len(ran(scenario).stdout) < size * MiB, len(ran(scenario).stdout)


@then(
    parsers.parse(
        "jobmgr-client status JOB --json says EXITED with exit_code {code:d} and "
        "output_truncated true"
    )
)
def _truncated_status(scenario: Scenario, code: int) -> None:
    status = _status_json(scenario)
    assert (status["state"], status["exit_code"], status["output_truncated"]) == (
        "EXITED",
        code,
        True,
    ), status


# ---- a full disk ------------------------------------------------------------------------------


@then("the server still serves: list, status and the health check answer")
def _still_serves(scenario: Scenario) -> None:
    assert run_client(scenario, "user", "list").returncode == 0
    assert _status_json(scenario)["state"] == "EXITED"
    reply = health_pb2_grpc.HealthStub(scenario.server.channel("user")).Check(
        health_pb2.HealthCheckRequest(service="job.JobManager"), timeout=10
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@then("PRAGMA integrity_check on the state dir's jobs.db says ok")
def _integrity(scenario: Scenario) -> None:
    path = scenario.program.state_dir / "jobs.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


@when("the state dir's disk is filled to the last byte")
def _fill_disk(scenario: Scenario) -> None:
    ballast = scenario.program.state_dir / "ballast"
    with open(ballast, "wb", buffering=0) as file:
        for size in (MiB, 4096, 1):  # big steps, then down to the last byte
            try:
                while True:
                    file.write(b"\0" * size)
            except OSError:
                continue
    scenario.notes["ballast"] = ballast


@when("the state dir's disk is given its space back")
def _free_disk(scenario: Scenario) -> None:
    scenario.notes["ballast"].unlink()
