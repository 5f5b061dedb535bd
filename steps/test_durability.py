"""Steps for features/durability.feature: crashes, restarts, retention, output cap, full disk."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from pytest_bdd import given, parsers, scenarios, then, when

from jobmgr.api import job_pb2, job_pb2_grpc

from ._cli_steps import *  # noqa: F403  # the shared steps
from ._cli_steps import cli_server, launch_server, ran, relaunch_server, run_client
from ._grpc_steps import *  # noqa: F403  # the shared steps
from ._grpc_steps import ApiScenario, eventually
from ._hostile_server import marked_processes
from .fixtures_server import StartServerProcess

scenarios("durability.feature")

MiB = 1024 * 1024


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _status_json(api: ApiScenario) -> dict[str, object]:
    done = run_client(api, "admin", "status --json JOB")
    assert done.returncode == 0, done.stderr
    status: dict[str, object] = json.loads(done.stdout)
    return status


# ---- servers ----------------------------------------------------------------------------------


@given("the jobmgr-server program is running with its state dir on a 4 MiB tmpfs")
def _server_on_tmpfs(start_server_process: StartServerProcess, api: ApiScenario) -> None:
    launch_server(api, start_server_process, state_tmpfs_bytes=4 * MiB)


@given(
    "the jobmgr-server program, allowed to run jobs as root, is running with its state dir "
    "on a 4 MiB tmpfs"
)
def _root_server_on_tmpfs(start_server_process: StartServerProcess, api: ApiScenario) -> None:
    config = '[jobs]\nallowed_run_as = ["nobody", "root"]\n'
    launch_server(api, start_server_process, config=config, state_tmpfs_bytes=4 * MiB)


@when("jobmgr-server is killed with SIGKILL")
def _crash(api: ApiScenario) -> None:
    cli_server(api).crash()


@when("jobmgr-server is started again")
def _start_again(start_server_process: StartServerProcess, api: ApiScenario) -> None:
    relaunch_server(api, start_server_process)


@when("jobmgr-server is killed with SIGKILL and started again")
def _crash_and_restart(start_server_process: StartServerProcess, api: ApiScenario) -> None:
    _crash(api)
    _start_again(start_server_process, api)


@when("jobmgr-server and then its launcher are killed with SIGKILL")
def _crash_both(api: ApiScenario) -> None:
    server = cli_server(api)
    launcher = server.launcher_pid
    assert launcher is not None, "no launcher is running"
    server.crash()
    os.kill(launcher, signal.SIGKILL)
    eventually(lambda: server.launcher_pid is None, 10, "the launcher to die")


# ---- a job that goes on when told to ----------------------------------------------------------


@given(
    'the admin has started, as root, a job that prints "before", then "during" and "after" '
    "each when told to"
)
def _told_job(api: ApiScenario) -> None:
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
    done = run_client(api, "admin", command)
    assert done.returncode == 0, done.stderr
    api.job = done.stdout.decode().strip()
    api.notes["tag"] = tag


def _job_tmp(api: ApiScenario) -> Path:
    """The job's own /tmp, as the host reaches it."""
    pids = marked_processes(api.notes["tag"])
    assert pids, "the job's shell is not running"
    return Path(f"/proc/{pids[0]}/root/tmp")


@when('the job is told to print "during", and does')
def _go_during(api: ApiScenario) -> None:
    tmp = _job_tmp(api)
    (tmp / "go-during").touch()
    eventually((tmp / "said-during").exists, 20, "the job to print during")


@when('the job is told to print "after" and exit 7')
def _go_after(api: ApiScenario) -> None:
    (_job_tmp(api) / "go-after").touch()


@then(parsers.parse("jobmgr-client status says the job EXITED with code {code:d}"))
def _exited_with(api: ApiScenario, code: int) -> None:
    eventually(lambda: _status_json(api)["state"] != "RUNNING", 20, "the job to end")
    status = _status_json(api)
    assert (status["state"], status["exit_code"]) == ("EXITED", code), status


# ---- output and status across a crash ---------------------------------------------------------


@when("the admin has read the job's whole output and status with jobmgr-client")
def _read_all(api: ApiScenario) -> None:
    done = run_client(api, "admin", "output JOB")  # follows the job to its end
    assert done.returncode == 0, done.stderr
    api.notes["digests"] = (_digest(done.stdout), _digest(done.stderr))
    api.notes["sizes"] = (len(done.stdout), len(done.stderr))
    api.notes["status"] = _status_json(api)


@then("jobmgr-client output JOB gives the same stdout and stderr, byte for byte")
def _same_output(api: ApiScenario) -> None:
    done = run_client(api, "admin", "output JOB")
    assert done.returncode == 0, done.stderr
    assert (len(done.stdout), len(done.stderr)) == api.notes["sizes"]
    assert (_digest(done.stdout), _digest(done.stderr)) == api.notes["digests"]


@then(
    parsers.parse(
        "jobmgr-client status JOB --json gives the same status, EXITED with exit_code {code:d}"
    )
)
def _same_status(api: ApiScenario, code: int) -> None:
    status = _status_json(api)
    assert status == api.notes["status"], (status, api.notes["status"])
    assert (status["state"], status["exit_code"]) == ("EXITED", code), status


# ---- a lost job -------------------------------------------------------------------------------


def _job_cgroups(api: ApiScenario) -> list[str]:
    return glob.glob(f"/sys/fs/cgroup/*/{cli_server(api).cgroup_parent}/{api.job}") + glob.glob(
        f"/sys/fs/cgroup/{cli_server(api).cgroup_parent}/{api.job}"
    )


@when("the job's processes are noted")
def _note_processes(api: ApiScenario) -> None:
    pids: set[int] = set()
    for directory in _job_cgroups(api):
        procs = Path(directory, "cgroup.procs")
        if procs.exists():
            pids |= {int(pid) for pid in procs.read_text().split()}
    assert pids, "the job has no processes in its cgroups"
    api.notes["pids"] = pids


@then(parsers.parse('its status reason mentions "{word}"'))
def _reason_mentions(api: ApiScenario, word: str) -> None:
    reason = json.loads(ran(api).stdout)["reason"]
    assert word in reason, reason


@then("the job's processes are gone")
def _processes_gone(api: ApiScenario) -> None:
    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state != "Z"

    left = {pid for pid in api.notes["pids"] if alive(pid)}
    assert not left, f"processes of the lost job still run: {left}"


@then("the job's cgroups are gone")
def _cgroups_gone(api: ApiScenario) -> None:
    assert _job_cgroups(api) == []


# ---- retention --------------------------------------------------------------------------------


@when(parsers.re(r"the admin runs (?P<commands>.+) to the end, in turn$"))
def _run_in_turn(api: ApiScenario, commands: str) -> None:
    jobs: dict[str, str] = api.notes.setdefault("jobs", {})
    for command in _quoted(commands):
        done = run_client(api, "admin", f"start -- {command}")
        assert done.returncode == 0, done.stderr
        api.job = jobs[command] = done.stdout.decode().strip()
        assert run_client(api, "admin", "output JOB").returncode == 0


@when(parsers.parse("{seconds:d} seconds pass"))
def _seconds_pass(seconds: int) -> None:
    time.sleep(seconds)


@then(parsers.re(r"jobmgr-client list shows only (?P<commands>.+)$"))
def _list_shows(api: ApiScenario, commands: str) -> None:
    done = run_client(api, "admin", "list --json")
    assert done.returncode == 0, done.stderr
    shown = [" ".join(job["argv"]) for job in json.loads(done.stdout)]
    assert shown == _quoted(commands), shown


@then(parsers.parse('the job "{command}" is not found, and its files are gone from the state dir'))
def _pruned(api: ApiScenario, command: str) -> None:
    job_id = api.notes["jobs"][command]
    done = run_client(api, "admin", f"status {job_id}")
    assert done.returncode == 1 and b"no job with id" in done.stderr, done
    left = list((cli_server(api).state_dir / "jobs").glob(f"{job_id}*"))
    assert not left, left


def _quoted(text: str) -> list[str]:
    return [part.split('"')[1] for part in text.split(", ") for part in part.split(" and ")]


# ---- truncation -------------------------------------------------------------------------------


@when("the job's status says its output was truncated")
def _until_truncated(api: ApiScenario) -> None:
    eventually(lambda: bool(_status_json(api)["output_truncated"]), 20, "the output cap")


@then(
    parsers.parse(
        "the output stream holds {size:d} bytes of stdout and ends with a truncation notice"
    )
)
def _stream_truncated(api: ApiScenario, size: int) -> None:
    with cli_server(api).channel("user") as channel:
        stub = job_pb2_grpc.JobManagerStub(channel)
        request = job_pb2.OutputRequest(uuid=api.job, no_follow=True)
        messages = list(stub.Output(request, timeout=10))
    stdout = b"".join(m.output for m in messages if m.stream == job_pb2.STREAM_STDOUT)
    assert len(stdout) == size, len(stdout)
    assert messages[-1].truncated and not messages[-1].output, messages[-1]
    assert not any(m.truncated for m in messages[:-1])


@then(parsers.parse("its stdout is {size:d} bytes long"))
def _stdout_size(api: ApiScenario, size: int) -> None:
    assert len(ran(api).stdout) == size, len(ran(api).stdout)


@then(parsers.parse("its stdout is shorter than {size:d} MiB"))
def _stdout_shorter(api: ApiScenario, size: int) -> None:
    assert 0 < len(ran(api).stdout) < size * MiB, len(ran(api).stdout)


@then(
    parsers.parse(
        "jobmgr-client status JOB --json says EXITED with exit_code {code:d} and "
        "output_truncated true"
    )
)
def _truncated_status(api: ApiScenario, code: int) -> None:
    status = _status_json(api)
    assert (status["state"], status["exit_code"], status["output_truncated"]) == (
        "EXITED",
        code,
        True,
    ), status


# ---- a full disk ------------------------------------------------------------------------------


@then("the server still serves: list, status and the health check answer")
def _still_serves(api: ApiScenario) -> None:
    assert run_client(api, "user", "list").returncode == 0
    assert _status_json(api)["state"] == "EXITED"
    with cli_server(api).channel("user") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="job.JobManager"), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@then("PRAGMA integrity_check on the state dir's jobs.db says ok")
def _integrity(api: ApiScenario) -> None:
    path = cli_server(api).state_dir / "jobs.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


@when("the state dir's disk is filled to the last byte")
def _fill_disk(api: ApiScenario) -> None:
    ballast = cli_server(api).state_dir / "ballast"
    with open(ballast, "wb", buffering=0) as file:
        for size in (MiB, 4096, 1):  # big steps, then down to the last byte
            try:
                while True:
                    file.write(b"\0" * size)
            except OSError:
                continue
    api.notes["ballast"] = ballast


@when("the state dir's disk is given its space back")
def _free_disk(api: ApiScenario) -> None:
    api.notes["ballast"].unlink()
