"""Steps of features/hardening.feature about the server's own files and helpers: another user
who tries to make the launcher (root) import its code, or to read the server's state
directory, and a state directory the server must refuse. The other user is nobody, acting
straight on the host: a job's sandbox would hide the server's directories from it anyway, and
these promises must hold without it. Each server runs from a directory every user may reach
(launch_server's ``workdir_mode``)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

from pytest_bdd import given, parsers, then, when

import jobmgr
from harness.poll import eventually
from harness.server import ServerDidNotStart, ServerProgram

from .fixtures_scenario import Scenario
from .fixtures_server import LaunchServer

NOBODY = pwd.getpwnam("nobody")
# A job's module, planted where the server was started: it notes who imported it, then hands
# over to the real package so that nothing else looks amiss.
PLANTED = """import os
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(_here, "planted-was-imported"), "a") as _note:
    _note.write("imported by uid %d\\n" % os.getuid())
__path__[:] = [{real!r}]
"""


def job_output(server: ServerProgram, argv: list[str]) -> tuple[int, bytes]:
    job = server.start_job(argv)
    output = server.output(job)
    return server.status(job).exit_code, output


def as_nobody(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` as the user nobody (and its group alone), from /."""
    return subprocess.run(
        argv, user=NOBODY.pw_uid, group=NOBODY.pw_gid, extra_groups=[], cwd="/",
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=30, check=False,
    )  # fmt: skip


def stop_with_launcher(server: ServerProgram) -> None:
    assert server.terminate() == 0, server.stderr[-2000:]
    eventually(lambda: server.launcher_pid() is None, 15.0, "the launcher to exit")


# ---- a planted module -------------------------------------------------------------------------


@given("jobmgr-server was started from a directory every user may write to")
def _from_open_dir(launch_server: LaunchServer, scenario: Scenario) -> None:
    scenario.server = launch_server(workdir_mode=0o1777)


@given("the user nobody has written jobmgr/__init__.py into that directory")
def _plant(scenario: Scenario) -> None:
    server = scenario.program
    code = PLANTED.format(real=str(Path(jobmgr.__file__).parent))
    script = 'mkdir "$1/jobmgr" && printf "%s" "$2" > "$1/jobmgr/__init__.py"'
    done = as_nobody(["sh", "-c", script, "plant", str(server.workdir), code])
    assert done.returncode == 0, done.stderr
    planted = server.workdir / "jobmgr" / "__init__.py"
    assert planted.stat().st_uid == NOBODY.pw_uid, "the module was not written by nobody"


@when("jobmgr-server is stopped and started again from the same directory")
def _restart(scenario: Scenario) -> None:
    stop_with_launcher(scenario.program)
    scenario.program.start()


@then(parsers.parse('a job started after the restart prints "{text}" and exits 0'))
@then(parsers.parse('a job started on it prints "{text}" and exits 0'))
def _job_prints(scenario: Scenario, text: str) -> None:
    exit_code, output = job_output(scenario.program, ["echo", text])
    assert (exit_code, output) == (0, text.encode() + b"\n")


@then("the planted module was never imported")
def _never_imported(scenario: Scenario) -> None:
    note = scenario.program.workdir / "planted-was-imported"
    assert not note.exists(), f"the planted module ran: {note.read_text()!r}"


# ---- the state directory ----------------------------------------------------------------------


@given("a state directory left by an older jobmgr: the directory 0755, every file in it 0644")
def _open_state(launch_server: LaunchServer, scenario: Scenario) -> None:
    server = launch_server(workdir_mode=0o755)
    server.wait_ended(server.start_job(["echo", "a record"]))
    stop_with_launcher(server)
    for path in [server.state_dir, *server.state_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    scenario.server = server


@when("jobmgr-server starts on that state directory")
def _start_again(scenario: Scenario) -> None:
    scenario.program.start()


@then("the user nobody can read neither jobs.db nor launcher.log")
def _unreadable(scenario: Scenario) -> None:
    script = 'for f in "$1/jobs.db" "$1/launcher.log"; do '
    script += 'head -c1 "$f" >/dev/null && echo "read $f"; done; :'
    done = as_nobody(["sh", "-c", script, "peek", str(scenario.program.state_dir)])
    assert done.returncode == 0 and b"read " not in done.stdout, done.stdout


@then("the state directory and every directory in it are mode 0700, every file 0600")
def _private(scenario: Scenario) -> None:
    state_dir = scenario.program.state_dir
    wrong = []
    for path in [state_dir, *state_dir.rglob("*")]:
        st = path.lstat()
        wanted = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != wanted:
            wrong.append(f"{path}: {stat.S_IMODE(st.st_mode):o}")
    assert not wrong, wrong


@given("a state directory owned by nobody")
def _foreign_state(launch_server: LaunchServer, scenario: Scenario) -> None:
    server = launch_server(workdir_mode=0o755, start=False)
    server.state_dir.mkdir(mode=0o700)
    os.chown(server.state_dir, NOBODY.pw_uid, -1)
    scenario.server = server


@when("jobmgr-server is started on that state directory")
def _try_start(scenario: Scenario) -> None:
    server = scenario.program
    try:
        server.start()
    except ServerDidNotStart:
        scenario.notes["exit_status"] = server.wait(10)
    else:
        scenario.notes["exit_status"] = None  # it serves: the step after says so


@then(parsers.parse('it exits with status 1 naming the state directory and "{says}"'))
def _refused(scenario: Scenario, says: str) -> None:
    server = scenario.program
    log = server.stderr
    assert scenario.notes["exit_status"] == 1, (scenario.notes["exit_status"], log)
    assert str(server.state_dir) in log and says in log, log
    assert "Traceback" not in log, log


@given(
    parsers.parse(
        "jobmgr-server is running on a state directory whose path is over {length:d} bytes long"
    )
)
def _deep_state(launch_server: LaunchServer, scenario: Scenario, length: int) -> None:
    # The launcher's socket lives in the state dir; a unix socket's address holds 107 bytes.
    deep = "/".join(["d" * 99] * (length // 100 + 1))
    scenario.server = launch_server(state_dir=f"{deep}/state")
