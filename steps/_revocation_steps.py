"""Steps of features/hardening.feature on revocation: a CRL at start and after a
reload, calls and streams of a revoked certificate, a CRL the server must refuse."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pytest_bdd import given, parsers, then, when

from harness.figures import report
from harness.pki import ScenarioPKI
from harness.poll import eventually
from harness.programs import run_program
from harness.rpc import call
from jobmgr.api import job_pb2, job_pb2_grpc

from ._h2 import ClientTLS, RawCall
from ._handshake_steps import start_by_hand
from ._identity_pki import crl_of, reload, revoke_in_crl, run_revoke
from .fixtures_pki import issuer_of
from .fixtures_scenario import Scenario
from .fixtures_server import LaunchServer

COUNTING = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done"


@dataclass
class Follower:
    """One Output stream read in a thread: the lines it got, when, and how it ended."""

    stream: grpc.Future
    lines: list[tuple[float, bytes]] = field(default_factory=list)
    code: grpc.StatusCode | None = None
    details: str = ""
    ended_at: float = 0.0
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, stub: job_pb2_grpc.JobManagerStub, job_id: str) -> Follower:
        stream = stub.Output(job_pb2.OutputRequest(uuid=job_id), timeout=120)
        follower = cls(stream)
        follower._thread = threading.Thread(target=follower._read, daemon=True)
        follower._thread.start()
        return follower

    def _read(self) -> None:
        pending = b""
        try:
            for message in self.stream:
                pending += message.output
                *whole, pending = pending.split(b"\n")
                self.lines += [(time.monotonic(), line) for line in whole]
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""
        self.ended_at = time.monotonic()

    @property
    def ended(self) -> bool:
        return self.code is not None

    def counted(self) -> list[int]:
        return [int(line) for _, line in self.lines if line.isdigit()]

    def stop(self) -> None:
        self.stream.cancel()
        if self._thread is not None:
            self._thread.join(10)


@pytest.fixture
def raw_calls() -> Iterator[list[RawCall]]:
    """Calls made by hand, closed after the scenario."""
    made: list[RawCall] = []
    yield made
    for raw in made:
        raw.close()


@pytest.fixture
def followed_streams() -> Iterator[list[Follower]]:
    """Output streams a scenario follows, cancelled after it (before its server stops)."""
    started: list[Follower] = []
    yield started
    for follower in started:
        follower.stop()


# ---- revocation -------------------------------------------------------------------------------


@given(
    parsers.re(
        "the jobmgr-server program is running with (?P<config>a configuration file and )?"
        "a CRL that revokes nothing"
    )
)
def _with_empty_crl(
    scenario: Scenario,
    launch_server: LaunchServer,
    scenario_pki: ScenarioPKI,
    trusted_ca: trustme.CA,
    config: str | None,
) -> None:
    scenario.notes["ca_dir"] = directory = revoke_in_crl(scenario_pki, trusted_ca)
    # A configuration file for a reload to change (see _reload_steps).
    text = '[access]\nuser_sees = "all"\n' if config else None
    scenario.server = launch_server("--crl", str(directory / "crl.pem"), config=text)


@given("the user's certificate is revoked in a CRL")
def _user_revoked(scenario: Scenario, scenario_pki: ScenarioPKI, trusted_ca: trustme.CA) -> None:
    user = scenario_pki.client("user").cert_path
    scenario.notes["ca_dir"] = revoke_in_crl(scenario_pki, trusted_ca, user)


@given("the jobmgr-server program is running with that CRL")
def _with_that_crl(scenario: Scenario, launch_server: LaunchServer) -> None:
    scenario.server = launch_server("--crl", str(scenario.notes["ca_dir"] / "crl.pem"))


@given("the user has listed jobs over a connection it keeps open")
def _user_listed(scenario: Scenario) -> None:
    got = call(scenario.program.stub("user").List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@when(
    "the operator revokes the user's certificate with jobmgr-certs revoke and sends the "
    "server SIGHUP"
)
def _revoke_user(scenario: Scenario) -> None:
    run_revoke(scenario.notes["ca_dir"], scenario.program.pki.client("user").cert_path)
    scenario.notes["reloaded_at"] = time.monotonic()
    line = reload(scenario.program)
    assert "reloaded:" in line, line


@then(parsers.parse('the user\'s next List on that connection fails with {code} saying "{says}"'))
def _user_next_list_fails(scenario: Scenario, code: str, says: str) -> None:
    got = call(scenario.program.stub("user").List, job_pb2.ListRequest())
    assert got.code == getattr(grpc.StatusCode, code) and says in got.details, got


@then("the user's next List on that connection still succeeds")
def _user_next_list_works(scenario: Scenario) -> None:
    got = call(scenario.program.stub("user").List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@then("the admin's List still succeeds")
def _admin_lists(scenario: Scenario) -> None:
    got = call(scenario.program.stub("admin").List, job_pb2.ListRequest())
    assert got.code == grpc.StatusCode.OK, got


@then("the server logged the user's List as UNAUTHENTICATED")
def _logged_unauthenticated(scenario: Scenario) -> None:
    def logged() -> bool:
        return any(
            "List" in line and "client_user" in line and "UNAUTHENTICATED" in line
            for line in scenario.program.stderr.splitlines()
        )

    eventually(logged, 5.0, "the log line of the refused List")


@given("the admin has started a job that counts, one line every 0.1 seconds")
def _counting(scenario: Scenario) -> None:
    scenario.job = scenario.program.start_job(scenario.program.marked(COUNTING))


def _follow(scenario: Scenario, followed_streams: list[Follower], kind: str) -> None:
    follower = Follower.start(scenario.program.stub(kind), scenario.job)
    followed_streams.append(follower)
    scenario.notes[f"follower {kind}"] = follower
    eventually(lambda: len(follower.lines) >= 3, 15.0, f"the {kind}'s stream to start")


@given("the user and the admin are both following that job's output")
def _both_follow(scenario: Scenario, followed_streams: list[Follower]) -> None:
    _follow(scenario, followed_streams, "user")
    _follow(scenario, followed_streams, "admin")


@given("the admin is following that job's output")
def _admin_follows(scenario: Scenario, followed_streams: list[Follower]) -> None:
    _follow(scenario, followed_streams, "admin")


@then(
    parsers.parse('within {seconds:d} seconds the user\'s stream ends with {code} saying "{says}"')
)
def _user_stream_ends(scenario: Scenario, seconds: int, code: str, says: str) -> None:
    follower: Follower = scenario.notes["follower user"]
    eventually(lambda: follower.ended, seconds, "the user's stream to end")
    assert follower.code == getattr(grpc.StatusCode, code) and says in follower.details, (
        follower.code,
        follower.details,
    )
    after = follower.ended_at - scenario.notes["reloaded_at"]
    report(f"stream ended with {code} {after:.3f}s after SIGHUP")


@then("the job is still running, and the admin's stream goes on counting without a gap")
def _goes_on(scenario: Scenario) -> None:
    follower: Follower = scenario.notes["follower admin"]
    seen = len(follower.lines)
    eventually(lambda: len(follower.lines) >= seen + 10, 15.0, "ten more lines on the stream")
    assert not follower.ended, (follower.code, follower.details)
    counted = follower.counted()
    assert counted == list(range(counted[0], counted[0] + len(counted))), counted
    assert scenario.program.status(scenario.job).state == job_pb2.JOB_STATE_RUNNING


@given("the admin has started a job that writes 64 MiB and then sleeps")
def _writer(scenario: Scenario) -> None:
    scenario.job = scenario.program.start_job(
        scenario.program.marked("head -c 64M /dev/zero; sleep 600")
    )


@given(
    "the user has opened that job's Output stream by hand, taken one message and stopped reading"
)
def _stalled_reader(scenario: Scenario, raw_calls: list[RawCall]) -> None:
    server = scenario.program
    user = server.pki.client("user")
    raw = RawCall(server.port, ClientTLS(server.pki.ca_path, user.cert_path, user.key_path))
    raw_calls.append(raw)
    request = job_pb2.OutputRequest(uuid=scenario.job).SerializeToString()
    raw.send_call("/job.JobManager/Output", request)
    assert raw.read_until_data(), "the stream gave no output"


@then(
    parsers.parse(
        "within {seconds:d} seconds the server has ended the user's Output call and logged it"
    )
)
def _stalled_cut_off(scenario: Scenario, seconds: int) -> None:
    def logged() -> bool:
        return any(
            "/Output" in line and "client_user" in line
            for line in scenario.program.stderr.splitlines()
        )

    eventually(logged, seconds, "the log line of the user's Output call")
    after = time.monotonic() - scenario.notes["reloaded_at"]
    report(f"unread revoked stream cut off {after:.1f}s after SIGHUP")


@then("the job is still running")
def _still_running(scenario: Scenario) -> None:
    assert scenario.program.status(scenario.job).state == job_pb2.JOB_STATE_RUNNING


@when("the user connects and calls List, Status, Output and Health")
def _user_calls(scenario: Scenario) -> None:
    user = scenario.program.channel("user")
    stub = job_pb2_grpc.JobManagerStub(user)
    some_id = str(uuid.uuid4())
    scenario.notes["calls"] = {
        "List": call(stub.List, job_pb2.ListRequest()),
        "Status": call(stub.Status, job_pb2.StatusRequest(uuid=some_id)),
        "Output": call(stub.Output, job_pb2.OutputRequest(uuid=some_id)),
        "Health": call(health_pb2_grpc.HealthStub(user).Check, health_pb2.HealthCheckRequest()),
    }


@then(parsers.parse('each call fails with UNAUTHENTICATED saying "{says}"'))
def _each_unauthenticated(scenario: Scenario, says: str) -> None:
    for name, got in scenario.notes["calls"].items():
        assert got.code == grpc.StatusCode.UNAUTHENTICATED and says in got.details, (name, got)


@when("a TLS 1.3 client with the user's certificate opens HTTP/2 by hand")
def _by_hand(scenario: Scenario) -> None:
    server = scenario.program
    user = server.pki.client("user")
    tls = ClientTLS(server.pki.ca_path, user.cert_path, user.key_path)
    # Read by the "ends the connection without sending a single HTTP/2 frame" of the handshakes.
    scenario.notes["handshake"] = start_by_hand(server.port, tls, server.marked("sleep 30"))


@given("a CRL signed by another CA")
def _foreign_crl(scenario: Scenario, untrusted_ca: trustme.CA, tmp_path: Path) -> None:
    path = tmp_path / "foreign-crl.pem"
    path.write_bytes(crl_of(issuer_of(untrusted_ca), [1]))
    path.chmod(0o644)
    scenario.notes["crl"] = path


@when("jobmgr-server is started with --crl pointing at it")
def _start_with_foreign_crl(
    scenario: Scenario, scenario_pki: ScenarioPKI, tmp_path: Path, server_cgroup_parent: str
) -> None:
    done = run_program(
        "jobmgr-server", "--host", "localhost", "--port", "0",
        "--ca", str(scenario_pki.ca_path), "--cert", str(scenario_pki.server.cert_path),
        "--key", str(scenario_pki.server.key_path), "--state-dir", str(tmp_path / "state"),
        "--cgroup-parent", server_cgroup_parent, "--crl", str(scenario.notes["crl"]),
    )  # fmt: skip
    scenario.notes["refused"] = done


@then(parsers.parse('it exits 1 saying "{flag}" with the CRL\'s path and "{says}"'))
def _refused_naming(scenario: Scenario, flag: str, says: str) -> None:
    done = scenario.notes["refused"]
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, (done.returncode, stderr)
    assert f"{flag} {scenario.notes['crl']}" in stderr and says in stderr, stderr
    assert "Traceback" not in stderr, stderr
