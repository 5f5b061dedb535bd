"""Steps of features/hardening_identity.feature on revocation: a CRL at start and after a
reload, calls and streams of a revoked certificate, a CRL the server must refuse."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pytest_bdd import given, parsers, then, when

from jobmgr.api import job_pb2, job_pb2_grpc

from ._grpc_steps import eventually
from ._hostile_h2 import ClientTLS, RawCall
from ._hostile_server import LaunchServer
from ._hostile_steps import Hostile, outcome, report
from ._identity_pki import (
    Follower,
    ca_dir,
    crl_of,
    issuer_of,
    reload,
    run_revoke,
    server_answers,
)
from .fixtures_pki import ScenarioPKI
from .fixtures_server import run_program

COUNTING = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done"


@pytest.fixture
def raw_calls() -> Iterator[list[RawCall]]:
    """Calls made by hand, closed after the scenario."""
    made: list[RawCall] = []
    yield made
    for call in made:
        call.close()


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    """Output streams a scenario follows, cancelled after it (before its server stops)."""
    started: list[Follower] = []
    yield started
    for follower in started:
        follower.stop()


# ---- revocation -------------------------------------------------------------------------------


@given("the jobmgr-server program is running with a CRL that revokes nothing")
def _with_empty_crl(
    hostile: Hostile, launch_server: LaunchServer, scenario_pki: ScenarioPKI, trusted_ca: trustme.CA
) -> None:
    directory = ca_dir(scenario_pki, trusted_ca)
    run_revoke(directory)
    hostile.notes["ca_dir"] = directory
    hostile.server = launch_server("--crl", str(directory / "crl.pem"))


@given("the user's certificate is revoked in a CRL")
def _user_revoked(hostile: Hostile, scenario_pki: ScenarioPKI, trusted_ca: trustme.CA) -> None:
    directory = ca_dir(scenario_pki, trusted_ca)
    said = run_revoke(directory, scenario_pki.client("user").cert_path)
    assert "revoked" in said, said
    hostile.notes["ca_dir"] = directory


@given("the jobmgr-server program is running with that CRL")
def _with_that_crl(hostile: Hostile, launch_server: LaunchServer) -> None:
    hostile.server = launch_server("--crl", str(hostile.notes["ca_dir"] / "crl.pem"))


@given("the user has listed jobs over a connection it keeps open")
def _user_listed(hostile: Hostile) -> None:
    got = outcome(hostile.srv.stub("user").List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@when(
    "the operator revokes the user's certificate with jobmgr-certs revoke and sends the "
    "server SIGHUP"
)
def _revoke_user(hostile: Hostile) -> None:
    run_revoke(hostile.notes["ca_dir"], hostile.srv.pki.client("user").cert_path)
    hostile.notes["reloaded_at"] = time.monotonic()
    line = reload(hostile.srv)
    assert "reloaded:" in line, line


@then(parsers.parse('the user\'s next List on that connection fails with {code} saying "{says}"'))
def _user_next_list_fails(hostile: Hostile, code: str, says: str) -> None:
    got = outcome(hostile.srv.stub("user").List, job_pb2.ListRequest())
    assert got.code == getattr(grpc.StatusCode, code) and says in got.details, got


@then("the user's next List on that connection still succeeds")
def _user_next_list_works(hostile: Hostile) -> None:
    got = outcome(hostile.srv.stub("user").List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@then("the admin's List still succeeds")
def _admin_lists(hostile: Hostile) -> None:
    got = outcome(hostile.srv.stub("admin").List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@then("the server logged the user's List as UNAUTHENTICATED")
def _logged_unauthenticated(hostile: Hostile) -> None:
    def logged() -> bool:
        return any(
            "List" in line and "client_user" in line and "UNAUTHENTICATED" in line
            for line in hostile.srv.stderr.splitlines()
        )

    eventually(logged, 5.0, "the log line of the refused List")


@given("the admin has started a job that counts, one line every 0.1 seconds")
def _counting(hostile: Hostile) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked(COUNTING))


def _follow(hostile: Hostile, followers: list[Follower], kind: str) -> None:
    follower = Follower.start(hostile.srv.stub(kind), hostile.job)
    followers.append(follower)
    hostile.notes[f"follower {kind}"] = follower
    eventually(lambda: len(follower.lines) >= 3, 15.0, f"the {kind}'s stream to start")


@given("the user and the admin are both following that job's output")
def _both_follow(hostile: Hostile, followers: list[Follower]) -> None:
    _follow(hostile, followers, "user")
    _follow(hostile, followers, "admin")


@given("the admin is following that job's output")
def _admin_follows(hostile: Hostile, followers: list[Follower]) -> None:
    _follow(hostile, followers, "admin")


@then(
    parsers.parse('within {seconds:d} seconds the user\'s stream ends with {code} saying "{says}"')
)
def _user_stream_ends(hostile: Hostile, seconds: int, code: str, says: str) -> None:
    follower: Follower = hostile.notes["follower user"]
    eventually(lambda: follower.ended, seconds, "the user's stream to end")
    assert follower.code == getattr(grpc.StatusCode, code) and says in follower.details, (
        follower.code,
        follower.details,
    )
    after = follower.ended_at - hostile.notes["reloaded_at"]
    report(f"stream ended with {code} {after:.3f}s after SIGHUP")


@then("the job is still running, and the admin's stream goes on counting without a gap")
def _goes_on(hostile: Hostile) -> None:
    follower: Follower = hostile.notes["follower admin"]
    seen = len(follower.lines)
    eventually(lambda: len(follower.lines) >= seen + 10, 15.0, "ten more lines on the stream")
    assert not follower.ended, (follower.code, follower.details)
    counted = follower.counted()
    assert counted == list(range(counted[0], counted[0] + len(counted))), counted
    assert hostile.srv.status(hostile.job).status == "RUNNING"


@given("the admin has started a job that writes 64 MiB and then sleeps")
def _writer(hostile: Hostile) -> None:
    hostile.job = hostile.srv.start_job(hostile.srv.marked("head -c 64M /dev/zero; sleep 600"))


@given(
    "the user has opened that job's Output stream by hand, taken one message and stopped reading"
)
def _stalled_reader(hostile: Hostile, raw_calls: list[RawCall]) -> None:
    server = hostile.srv
    user = server.pki.client("user")
    call = RawCall(server.port, ClientTLS(server.pki.ca_path, user.cert_path, user.key_path))
    raw_calls.append(call)
    request = job_pb2.OutputRequest(uuid=hostile.job).SerializeToString()
    call.send_call("/job.JobManager/Output", request)
    assert call.read_until_data(), "the stream gave no output"


@then(
    parsers.parse(
        "within {seconds:d} seconds the server has ended the user's Output call and logged it"
    )
)
def _stalled_cut_off(hostile: Hostile, seconds: int) -> None:
    def logged() -> bool:
        return any(
            "/Output" in line and "client_user" in line for line in hostile.srv.stderr.splitlines()
        )

    eventually(logged, seconds, "the log line of the user's Output call")
    after = time.monotonic() - hostile.notes["reloaded_at"]
    report(f"unread revoked stream cut off {after:.1f}s after SIGHUP")


@then("the job is still running")
def _still_running(hostile: Hostile) -> None:
    assert hostile.srv.status(hostile.job).status == "RUNNING"


@when("the user connects and calls List, Status, Output and Health")
def _user_calls(hostile: Hostile) -> None:
    user = hostile.srv.channel("user")
    stub = job_pb2_grpc.JobManagerStub(user)
    some_id = str(uuid.uuid4())
    hostile.notes["calls"] = {
        "List": outcome(stub.List, job_pb2.ListRequest()),
        "Status": outcome(stub.Status, job_pb2.StatusRequest(uuid=some_id)),
        "Output": outcome(stub.Output, job_pb2.OutputRequest(uuid=some_id)),
        "Health": outcome(health_pb2_grpc.HealthStub(user).Check, health_pb2.HealthCheckRequest()),
    }


@then(parsers.parse('each call fails with UNAUTHENTICATED saying "{says}"'))
def _each_unauthenticated(hostile: Hostile, says: str) -> None:
    for name, got in hostile.notes["calls"].items():
        assert got.code == grpc.StatusCode.UNAUTHENTICATED and says in got.details, (name, got)


@when("a TLS 1.3 client with the user's certificate opens HTTP/2 by hand")
def _by_hand(hostile: Hostile, tmp_path: Path) -> None:
    server = hostile.srv
    answer = server_answers(server.port, server.pki.ca_pem, server.pki.client("user"), tmp_path)
    hostile.notes["answer"] = answer


@then("the server ends the connection without sending a single HTTP/2 frame")
def _no_frame(hostile: Hostile) -> None:
    assert hostile.notes["answer"] == b"", hostile.notes["answer"]


@given("a CRL signed by another CA")
def _foreign_crl(hostile: Hostile, untrusted_ca: trustme.CA, tmp_path: Path) -> None:
    path = tmp_path / "foreign-crl.pem"
    path.write_bytes(crl_of(issuer_of(untrusted_ca), [1]))
    path.chmod(0o644)
    hostile.notes["crl"] = path


@when("jobmgr-server is started with --crl pointing at it")
def _start_with_foreign_crl(
    hostile: Hostile, scenario_pki: ScenarioPKI, tmp_path: Path, server_cgroup_parent: str
) -> None:
    done = run_program(
        "jobmgr-server", "--host", "localhost", "--port", "0",
        "--ca", str(scenario_pki.ca_path), "--cert", str(scenario_pki.server.cert_path),
        "--key", str(scenario_pki.server.key_path), "--state-dir", str(tmp_path / "state"),
        "--cgroup-parent", server_cgroup_parent, "--crl", str(hostile.notes["crl"]),
    )  # fmt: skip
    hostile.notes["refused"] = done


@then(parsers.parse('it exits 1 saying "{flag}" with the CRL\'s path and "{says}"'))
def _refused_naming(hostile: Hostile, flag: str, says: str) -> None:
    done = hostile.notes["refused"]
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, (done.returncode, stderr)
    assert f"{flag} {hostile.notes['crl']}" in stderr and says in stderr, stderr
    assert "Traceback" not in stderr, stderr
