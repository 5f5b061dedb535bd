"""Steps for features/hardening.feature: a job that tries to make the server run its code or
read the server's state, limits tried past their values (see _hardening_limit_steps), log
lines a caller tries to break, and the measured flood."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from pytest_bdd import given, parsers, scenarios, then, when

import jobmgr
from jobmgr import pki
from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from ._grpc_steps import eventually, unescape
from ._hardening_flood import Flood
from ._hardening_limit_steps import *  # noqa: F403  # the connection and stream steps
from ._hardening_limit_steps import admin_tls, floods, held_sockets, start_flood  # noqa: F401
from ._hardening_server import ExposedServer, LaunchExposed, exposed_root, launch_exposed  # noqa: F401
from ._hostile_server import HostileServer, usage
from ._hostile_steps import *  # noqa: F403  # the shared steps
from ._hostile_steps import Hostile, mark_log, new_log, percentile, report
from .fixtures_pki import _as_issuer
from .fixtures_server import REPO_ROOT, program_env

scenarios("hardening.feature")

NOBODY = pwd.getpwnam("nobody").pw_uid
# A job's module, planted where the server was started: it notes who imported it, then hands
# over to the real package so that nothing else looks amiss.
PLANTED = """import os
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(_here, "planted-was-imported"), "a") as _note:
    _note.write("imported by uid %d\\n" % os.getuid())
__path__[:] = [{real!r}]
"""
# Control characters other than the newline that ends each line.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def job_output(server: HostileServer, argv: list[str]) -> tuple[int, bytes]:
    job = server.start_job(argv)
    output = server.output(job)
    return server.status(job).exit_code, output


# ---- a planted module ------------------------------------------------------------------------


@given("jobmgr-server was started from a directory every user may write to")
def _from_open_dir(launch_exposed: LaunchExposed, hostile: Hostile) -> None:  # noqa: F811
    hostile.server = launch_exposed(workdir_mode=0o1777)


@given("a job running as nobody has written jobmgr/__init__.py into that directory")
def _plant(hostile: Hostile) -> None:
    server = hostile.srv
    code = PLANTED.format(real=str(Path(jobmgr.__file__).parent))
    script = 'mkdir "$1/jobmgr" && printf "%s" "$2" > "$1/jobmgr/__init__.py"'
    argv = ["sh", "-c", script, server.marker, str(server.workdir), code]
    code_, output = job_output(server, argv)
    assert code_ == 0, output
    planted = server.workdir / "jobmgr" / "__init__.py"
    assert planted.stat().st_uid == NOBODY, "the job did not write the module as nobody"


@when("jobmgr-server is stopped and started again from the same directory")
def _restart(hostile: Hostile) -> None:
    server = hostile.srv
    assert server.terminate() == 0, server.stderr[-2000:]
    eventually(lambda: server.launcher_pid() is None, 15.0, "the launcher to exit")
    server.start()


@then(parsers.parse('a job started after the restart prints "{text}" and exits 0'))
def _job_after_restart(hostile: Hostile, text: str) -> None:
    code, output = job_output(hostile.srv, ["echo", text])
    assert (code, output) == (0, text.encode() + b"\n")


@then("the planted module was never imported")
def _never_imported(hostile: Hostile) -> None:
    note = hostile.srv.workdir / "planted-was-imported"
    assert not note.exists(), f"the planted module ran: {note.read_text()!r}"


# ---- the state directory ----------------------------------------------------------------------


@given("a state directory left by an older jobmgr: the directory 0755, every file in it 0644")
def _open_state(launch_exposed: LaunchExposed, hostile: Hostile) -> None:  # noqa: F811
    server = launch_exposed()
    server.wait_ended(server.start_job(["echo", "a record"]))
    assert server.terminate() == 0, server.stderr[-2000:]
    eventually(lambda: server.launcher_pid() is None, 15.0, "the launcher to exit")
    for path in [server.state_dir, *server.state_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    hostile.server = server


@when("jobmgr-server starts on that state directory")
def _start_again(hostile: Hostile) -> None:
    hostile.srv.start()


@then("a job running as nobody can read neither jobs.db nor launcher.log")
def _unreadable(hostile: Hostile) -> None:
    server = hostile.srv
    state = server.state_dir
    script = 'for f in "$1/jobs.db" "$1/launcher.log"; do '
    script += 'head -c1 "$f" >/dev/null && echo "read $f"; done; :'
    code, output = job_output(server, ["sh", "-c", script, server.marker, str(state)])
    assert code == 0 and b"read " not in output, output.decode(errors="replace")


@then("the state directory and every directory in it are mode 0700, every file 0600")
def _private(hostile: Hostile) -> None:
    wrong = []
    for path in [hostile.srv.state_dir, *hostile.srv.state_dir.rglob("*")]:
        st = path.lstat()
        wanted = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != wanted:
            wrong.append(f"{path}: {stat.S_IMODE(st.st_mode):o}")
    assert not wrong, wrong


@given("a state directory owned by nobody")
def _foreign_state(launch_exposed: LaunchExposed, hostile: Hostile) -> None:  # noqa: F811
    server = launch_exposed(start=False)
    server.state_dir.mkdir(mode=0o700)
    os.chown(server.state_dir, NOBODY, -1)
    hostile.server = server


@when("jobmgr-server is started on that state directory")
def _try_start(hostile: Hostile) -> None:
    server = hostile.srv
    assert isinstance(server, ExposedServer)
    hostile.notes["tried"] = server.try_start()


@then(parsers.parse('it exits with status 1 naming the state directory and "{says}"'))
def _refused(hostile: Hostile, says: str) -> None:
    tried: subprocess.CompletedProcess[str] = hostile.notes["tried"]
    assert tried.returncode == 1, (tried.returncode, tried.stderr)
    assert str(hostile.srv.state_dir) in tried.stderr and says in tried.stderr, tried.stderr
    assert "Traceback" not in tried.stderr, tried.stderr


# ---- the file descriptor limit ----------------------------------------------------------------


@given("jobmgr-server is running with a file descriptor limit of 256 soft and 1024 hard")
def _soft_limited(launch_exposed: LaunchExposed, hostile: Hostile) -> None:  # noqa: F811
    hostile.server = launch_exposed(nofile=(256, 1024))


@then("its soft file descriptor limit is 1024")
def _raised(hostile: Hostile) -> None:
    limits = Path(f"/proc/{hostile.srv.pid}/limits").read_text()
    soft = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits)
    assert soft is not None and soft.groups() == ("1024", "1024"), limits


@then("it logged its connection limits for fd_limit=1024, their sum below 1024")
def _limits_logged(hostile: Hostile) -> None:
    line = next(
        (ln for ln in new_log(hostile).splitlines() if "connection limits" in ln), ""
    )
    values = dict(re.findall(r"(\w+)=(\S+)", line))
    assert values.get("fd_limit") == "1024", line
    assert int(values["max_connections"]) + int(values["rpcs_in_flight"]) < 1024, line


# ---- the log ----------------------------------------------------------------------------------


@when(parsers.parse('the admin asks for the status of job "{job_id}"'))
def _odd_status(hostile: Hostile, job_id: str) -> None:
    hostile.notes["value"] = unescape(job_id)
    mark_log(hostile)
    try:
        hostile.srv.status(hostile.notes["value"])
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc


@when(parsers.parse('a client whose certificate has O=user and CN "{cn}" lists the jobs'))
def _odd_cn(hostile: Hostile, trusted_ca: trustme.CA, cn: str) -> None:
    name = unescape(cn)
    issued = pki.issue(
        _as_issuer(trusted_ca), purpose="client", common_name=name, organizations=["user"]
    )
    server = hostile.srv
    credentials = channel_credentials(
        ca_pem=server.pki.ca_pem, cert_pem=issued.cert_pem, key_pem=issued.key_pem
    )
    hostile.notes["value"] = name
    mark_log(hostile)
    with grpc.secure_channel(server.target, credentials) as channel:
        job_pb2_grpc.JobManagerStub(channel).List(job_pb2.ListRequest(), timeout=30)


@when(parsers.parse('a TLS 1.3 client with the admin certificate asks for the server name "{sni}"'))
def _odd_sni(hostile: Hostile, sni: str) -> None:
    name = unescape(sni)
    hostile.notes["value"] = name
    mark_log(hostile)
    context = admin_tls(hostile.srv).context()
    context.check_hostname = False  # the name is the attack, not a name to check
    with (
        socket.create_connection(("localhost", hostile.srv.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        assert tls.version() == "TLSv1.3"


@then("the server logged the whole value on exactly one line, with no raw control character")
def _one_line(hostile: Hostile) -> None:
    value: str = hostile.notes["value"]
    before, _, after = value.partition("\n")
    tail = after.split("\r")[0]  # what follows the newline, up to the next control character

    def lines() -> list[str]:
        return [line for line in new_log(hostile).splitlines() if tail in line]

    eventually(lambda: bool(lines()), 10.0, f"a log line holding {tail!r}")
    time.sleep(0.3)  # and no second one
    found = lines()
    assert len(found) == 1, found
    assert f"{before}\\n{tail}" in found[0], f"the value is not whole and escaped: {found[0]!r}"
    raw = RAW_CONTROL.search(new_log(hostile))
    assert raw is None, f"a raw control character {raw.group()!r} is in the log"
    hostile.notes["line"] = found[0]


@then("that line names the job id escaped and the caller's peer address")
def _names_job_and_peer(hostile: Hostile) -> None:
    line, value = hostile.notes["line"], hostile.notes["value"]
    if line.startswith("{"):
        entry = json.loads(line)
        assert entry["job"] == value and entry["peer"].startswith("ipv"), entry
    else:
        escaped = '"' + value.replace("\n", "\\n").replace("\r", "\\r") + '"'
        escaped = escaped.replace("\x1b", "\\x1b").replace("\x9b", "\\x9b")
        assert f"job={escaped}" in line, line
        assert re.search(r" peer=ipv[46]:\S+", line), line


@then(parsers.parse('that line names the caller "{cn}" escaped'))
def _names_caller(hostile: Hostile, cn: str) -> None:
    assert f'caller="{cn}"' in hostile.notes["line"], hostile.notes["line"]


# ---- the measured flood -----------------------------------------------------------------------


@pytest.fixture
def flood_processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Flood processes a scenario starts, killed after it (their sockets go with them)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def _admin_pairs(server: HostileServer, count: int, every: float = 0.0) -> list[float]:
    """Seconds each of ``count`` Start + Status pairs took, begun ``every`` s apart."""
    took = []
    for index in range(count):
        began = time.monotonic()
        job = server.start_job(["true"])
        server.status(job)
        took.append(time.monotonic() - began)
        if index + 1 < count:
            time.sleep(max(0.0, every - took[-1]))
    return took


def _quiet_usage(pid: int, settle: float) -> tuple[int, int]:
    """The fewest fds and least RSS the server shows within ``settle`` seconds."""
    fds, rss = 1 << 30, 1 << 60
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        now = usage(pid)
        fds, rss = min(fds, now.fds), min(rss, now.rss_bytes)
        time.sleep(0.25)
    return fds, rss


@given(
    "the server's open file descriptors and RSS are measured after a warm-up that met every limit"
)
def _measure_before(hostile: Hostile, floods: list[Flood]) -> None:  # noqa: F811
    server = hostile.srv
    quiet = _admin_pairs(server, 50)
    hostile.notes["quiet_p99"] = percentile(quiet, 0.99)
    hostile.notes["quiet_usage"] = _quiet_usage(server.pid, 3.0)
    # The flood's burst once, not held: what the first burst leaves (gRPC's pools, the
    # allocator's high-water mark, code run for the first time) is not what holding a flood
    # costs, which is what the figures after it are to show.
    warm = start_flood(hostile, floods, "user", job=hostile.job, streams=2000, idle=2000)
    time.sleep(1)
    warm.stop()
    hostile.notes["before"] = _quiet_usage(server.pid, 6.0)


@when(
    "2000 idle TCP connections from 127.0.0.2 and 2000 Output streams of the user client are held"
)
def _flood(hostile: Hostile, flood_processes: list[subprocess.Popen[str]]) -> None:
    server = hostile.srv
    user = server.pki.client("user")
    argv = [
        sys.executable, "-m", "steps._hardening_flood", "--target", f"127.0.0.1:{server.port}",
        "--port", str(server.port), "--ca", str(server.pki.ca_path), "--cert",
        str(user.cert_path), "--key", str(user.key_path), "--job", hostile.job,
        "--streams", "2000", "--connections", "20", "--idle", "2000", "--retry", "1",
    ]  # fmt: skip
    flood = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=program_env(), stdout=subprocess.PIPE, text=True
    )
    flood_processes.append(flood)
    hostile.notes["flood_process"] = flood
    assert flood.stdout is not None
    line = flood.stdout.readline()
    assert line.startswith("ready "), f"the flood did not get under way: {line!r}"
    hostile.notes["flood_ready"] = json.loads(line.split(" ", 1)[1])
    hostile.notes["during"] = usage(server.pid)


@then("50 admin Start + Status pairs, one every 0.2 s, each answer, within 1 s at p99")
def _served_under_flood(hostile: Hostile) -> None:
    server = hostile.srv
    took = _admin_pairs(server, 50, every=0.2)
    p50, p99 = percentile(took, 0.5), percentile(took, 0.99)
    report(
        f"flood: admin Start+Status p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
        f"(quiet p99 {hostile.notes['quiet_p99'] * 1000:.0f} ms); flood at start "
        f"{hostile.notes['flood_ready']}; server during: {hostile.notes['during']}"
    )
    assert p99 <= 1.0, f"p99 {p99:.2f} s over 50 pairs"


@then("once the flood is gone the server's open file descriptors and RSS are within 10% of before")
def _back_to_before(hostile: Hostile) -> None:
    server = hostile.srv
    flood: subprocess.Popen[str] = hostile.notes["flood_process"]
    flood.send_signal(signal.SIGTERM)
    final, _ = flood.communicate(timeout=120)
    report(f"flood: final counts {final.strip()}")
    server.close_channels()
    before_fds, before_rss = hostile.notes["before"]
    after_fds, after_rss = _quiet_usage(server.pid, 10.0)
    quiet_fds, quiet_rss = hostile.notes["quiet_usage"]
    report(
        f"flood: server fds {quiet_fds} quiet, {before_fds} after the warm-up burst, "
        f"{after_fds} after the flood; RSS {quiet_rss / 2**20:.1f} quiet, "
        f"{before_rss / 2**20:.1f} after the warm-up burst, {after_rss / 2**20:.1f} MiB after"
    )
    assert after_fds <= before_fds * 1.1, (before_fds, after_fds)
    assert after_rss <= before_rss * 1.1, (before_rss, after_rss)
