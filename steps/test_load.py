"""Steps for features/load.feature."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.duration_pb2 import Duration
from pytest_bdd import given, parsers, scenarios, then, when

from harness.client import CLIENT_OPTIONS
from harness.figures import percentile, report
from harness.poll import eventually
from harness.procs import usage
from harness.rpc import call
from harness.server import ServerProgram
from harness.speed import scaled
from jobmgr.api import job_pb2, job_pb2_grpc
from jobmgr.cli._malloc import TRIM_EVERY

from ._bystanders import MemoryWatch
from ._h2 import MAX_WINDOW, ClientTLS, RawCall
from ._load_clients import Load, check_accounts, run_load
from ._phrases import MiB
from .fixtures_scenario import Scenario

scenarios("load.feature")


def _admin_tls(server: ServerProgram) -> ClientTLS:
    pair = server.pki.client("admin")
    return ClientTLS(server.pki.ca_path, pair.cert_path, pair.key_path)


def _output_request(job: str) -> bytes:
    return job_pb2.OutputRequest(uuid=job).SerializeToString()


# ---- clients that never read ------------------------------------------------------------------


@given(parsers.parse("the admin has started a job writing {mib:d} MiB to stdout"))
def _big_writer(scenario: Scenario, mib: int) -> None:
    scenario.job = scenario.program.start_job(["head", "-c", f"{mib}M", "/dev/zero"])
    scenario.notes["size"] = mib * MiB


@when(
    parsers.parse(
        "{count:d} clients open its Output stream with a 2 GiB window, take one message, and "
        "never read again"
    )
)
def _stuck_clients(scenario: Scenario, count: int) -> None:
    scenario.notes["watch"] = MemoryWatch(scenario.program.pid)
    server = scenario.program
    stuck = []
    for _ in range(count):
        call = RawCall(server.port, _admin_tls(server), window=MAX_WINDOW)
        call.send_call("/job.JobManager/Output", _output_request(scenario.job))
        assert call.read_until_data(), "a client got no output at all"
        stuck.append(call)
    scenario.notes["stuck"] = stuck


@when("another client reads the job's whole output meanwhile")
def _full_reader(scenario: Scenario) -> None:
    server = scenario.program
    latencies: list[float] = []
    done = threading.Event()

    def ping() -> None:
        stub = server.stub()
        while not done.wait(0.1):
            began = time.monotonic()
            stub.Status(job_pb2.StatusRequest(uuid=scenario.job), timeout=30)
            latencies.append(time.monotonic() - began)

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    try:
        began = time.monotonic()
        received = len(server.output(scenario.job, timeout=120))
        took = time.monotonic() - began
        time.sleep(1.0)  # the stuck streams had time to pile up whatever they would
    finally:
        done.set()
        pinger.join(30)
        grew = scenario.notes["watch"].stop()
        for call in scenario.notes["stuck"]:
            call.close()
    report(
        f"never-reading clients: server RSS grew {grew / MiB:.1f} MiB; the reader got "
        f"{received / MiB:.0f} MiB in {took:.2f}s; slowest Status {max(latencies) * 1000:.1f} ms"
    )
    scenario.notes.update(received=received, grew=grew, latencies=latencies)


@then(parsers.parse("the other client received all {mib:d} MiB"))
def _received_all(scenario: Scenario, mib: int) -> None:
    assert scenario.notes["received"] == mib * MiB


@then(parsers.parse("the server's memory grew by less than {mib:d} MiB"))
def _bounded(scenario: Scenario, mib: int) -> None:
    assert scenario.notes["grew"] < mib * MiB, scenario.notes["grew"]


@then("the Status of that job answered within 1 second throughout")
def _status_quick(scenario: Scenario) -> None:
    latencies = scenario.notes["latencies"]
    assert latencies and max(latencies) < 1.0, max(latencies, default=None)


# ---- clients that vanish ----------------------------------------------------------------------


@given("the admin has started a job that printed 2 MiB and goes on printing")
def _printer(scenario: Scenario) -> None:
    server = scenario.program
    script = "head -c 2M /dev/zero; while :; do echo tick; sleep 0.05; done"
    scenario.job = server.start_job(server.marked(script))
    eventually(
        lambda: len(server.output(scenario.job, follow=False)) >= 2 * MiB, 10.0, "2 MiB of output"
    )


@when(
    parsers.parse(
        "{count:d} clients each open its Output stream, take one message and vanish, half by a "
        "TCP reset and half by cancelling the call"
    )
)
def _vanishers(scenario: Scenario, count: int) -> None:
    tls = _admin_tls(scenario.program)
    server = scenario.program
    credentials = server.credentials()
    request = job_pb2.OutputRequest(uuid=scenario.job)

    def reset(_: int) -> bool:
        call = RawCall(server.port, tls)
        try:
            call.send_call("/job.JobManager/Output", request.SerializeToString())
            return bool(call.read_until_data())
        finally:
            call.vanish()

    def cancel(_: int) -> bool:
        with grpc.secure_channel(server.target, credentials, options=CLIENT_OPTIONS) as channel:
            stream = job_pb2_grpc.JobManagerStub(channel).Output(request, timeout=30)
            got = next(stream, None)
            stream.cancel()
            return got is not None

    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        resets = list(pool.map(reset, range(count // 2)))
        cancels = list(pool.map(cancel, range(count - count // 2)))
    report(
        f"{count} mid-stream disconnects in {time.monotonic() - began:.1f}s "
        f"({sum(resets)} resets and {sum(cancels)} cancels after a first message)"
    )
    assert all(resets) and all(cancels), "some clients got no output before vanishing"


@then(parsers.parse("its memory grew by less than {mib:d} MiB"))
def _rss_after(scenario: Scenario, mib: int) -> None:
    # The server keeps freed buffers for reuse and hands them back every TRIM_EVERY seconds:
    # what is still held after that is what the disconnects left behind.
    server = scenario.program
    growth: list[int] = []

    def settled() -> bool:
        growth.append(usage(server.pid).rss_bytes - scenario.notes["before"].server.rss_bytes)
        return growth[-1] < mib * MiB

    try:
        eventually(settled, TRIM_EVERY + 2.0, f"server RSS back within {mib} MiB")
    finally:
        report(
            f"server RSS after the disconnects: {growth[0] / MiB:+.1f} MiB at first, "
            f"{growth[-1] / MiB:+.1f} MiB at last"
        )


# ---- many clients -----------------------------------------------------------------------------


@when(
    parsers.parse("{clients:d} clients mix Start, Status, Output and Stop for {seconds:d} seconds")
)
def _mix(scenario: Scenario, clients: int, seconds: int) -> None:
    began = time.monotonic()
    load = asyncio.run(run_load(scenario.program, clients, seconds))
    calls = ", ".join(f"{k} {v}" for k, v in sorted(load.calls.items()))
    report(
        f"{clients} clients x {seconds}s: {len(load.jobs)} jobs, {sum(load.calls.values())} "
        f"calls in {time.monotonic() - began:.1f}s ({calls})"
    )
    scenario.notes["load"] = load


@then("no call failed")
def _no_failures(scenario: Scenario) -> None:
    load: Load = scenario.notes["load"]
    assert not load.failures, f"{len(load.failures)} failed calls, e.g.:\n" + "\n".join(
        load.failures[:10]
    )


@then(
    "every job a client started is listed once, and ended with the exit or stop and the "
    "output it should"
)
def _accounted(scenario: Scenario) -> None:
    problems = check_accounts(scenario.program, scenario.notes["load"])
    assert not problems, f"{len(problems)} jobs not accounted for:\n" + "\n".join(problems[:10])


@then(parsers.parse("the p99 Status latency is reported, and is under {seconds:d} seconds"))
def _p99(scenario: Scenario, seconds: int) -> None:
    latencies = scenario.notes["load"].status_seconds
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    report(
        f"Status latency over {len(latencies)} calls: p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    # A bound for the reference host, like every timing bound here: 0.65-0.79 s on a quiet
    # 2-core machine for 200 clients, 2.07 s once in a slow spell of the same machine.
    assert p99 < scaled(seconds), (p99, scaled(seconds))


# ---- the cap ----------------------------------------------------------------------------------


@when(parsers.parse("{count:d} clients each start a long job at the same moment"))
def _rush(scenario: Scenario, count: int) -> None:
    server = scenario.program
    argv = server.marked("sleep 60")
    barrier = threading.Barrier(count)
    stubs = [server.stub() for _ in range(count)]

    def start(stub: job_pb2_grpc.JobManagerStub) -> object:
        request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
        barrier.wait(10)
        return call(stub.Start, request)

    with ThreadPoolExecutor(count) as pool:
        scenario.notes["rush"] = list(pool.map(start, stubs))


@then(
    parsers.parse(
        'exactly {ok:d} starts succeeded and {refused:d} got RESOURCE_EXHAUSTED saying "{says}"'
    )
)
def _capped(scenario: Scenario, ok: int, refused: int, says: str) -> None:
    rush = scenario.notes["rush"]
    codes = [r.code for r in rush]
    assert codes.count(grpc.StatusCode.OK) == ok, codes
    denied = [r for r in rush if r.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(denied) == refused, codes
    assert all(says in r.details for r in denied), denied[0].details
    report(f"cap: {ok} started, {refused} refused: {denied[0].details!r}")
    scenario.notes["running"] = [r.value.uuid for r in rush if r.code == grpc.StatusCode.OK]


@when("the admin stops one of the running jobs")
def _stop_one(scenario: Scenario) -> None:
    job = scenario.notes["running"][0]
    scenario.program.stub().Stop(job_pb2.StopRequest(uuid=job, grace=Duration()), timeout=30)


@then("one more start succeeds, and the next is refused again")
def _one_more(scenario: Scenario) -> None:
    server = scenario.program
    argv = server.marked("sleep 60")
    request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:])
    first, second = call(server.stub().Start, request), call(server.stub().Start, request)
    assert first.code == grpc.StatusCode.OK, first
    assert second.code == grpc.StatusCode.RESOURCE_EXHAUSTED, second
