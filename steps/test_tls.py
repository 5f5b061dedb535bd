"""Steps for features/tls.feature."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import grpc
from pytest_bdd import given, parsers, scenarios, then, when

from harness.pki import ScenarioPKI
from harness.rpc import call
from jobmgr.api import AccessGuard, job_pb2, job_pb2_grpc

from .fixtures_scenario import Scenario

scenarios("tls.feature")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS
H2_SETTINGS_TYPE = 0x04


@dataclass
class Handshake:
    """What a raw TLS client saw."""

    version: str | None = None
    alpn: str | None = None
    first_frame_type: int | None = None
    error: str = ""


def handshake(port: int, pki: ScenarioPKI, version: ssl.TLSVersion, kind: str) -> Handshake:
    """Connect with Python's ssl pinned to one TLS version, offering ALPN h2 and a client
    certificate; after the handshake, open HTTP/2 and read the server's first frame (under
    TLS 1.3 the server judges the client certificate only after the client is done)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = version
    context.set_alpn_protocols(["h2"])
    context.load_verify_locations(pki.ca_path)
    pair = pki.client(kind)
    context.load_cert_chain(pair.cert_path, pair.key_path)
    seen = Handshake()
    try:
        with (
            socket.create_connection(("localhost", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            seen.version, seen.alpn = tls.version(), tls.selected_alpn_protocol()
            tls.sendall(H2_PREFACE + H2_EMPTY_SETTINGS)
            header = tls.recv(9)
            seen.first_frame_type = header[3] if len(header) == 9 else None
    except (ssl.SSLError, OSError) as exc:
        seen.error = f"{type(exc).__name__}: {exc}"
    return seen


@when(parsers.parse("a TLS {version} client connects with the {kind} certificate"))
def _tls_client(scenario: Scenario, version: str, kind: str) -> None:
    tls_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
    server = scenario.server
    scenario.notes["handshake"] = handshake(server.port, server.pki, tls_version, kind)


@then("the handshake completes as TLSv1.3 and the server speaks HTTP/2")
def _handshake_ok(scenario: Scenario) -> None:
    seen: Handshake = scenario.notes["handshake"]
    assert not seen.error, seen
    assert (seen.version, seen.alpn) == ("TLSv1.3", "h2"), seen
    assert seen.first_frame_type == H2_SETTINGS_TYPE, seen


@then("the handshake fails")
def _handshake_fails(scenario: Scenario) -> None:
    seen: Handshake = scenario.notes["handshake"]
    assert seen.version is None and seen.error, seen


@when(parsers.parse("a client with the {kind} certificate asks for the list of jobs"))
def _bad_cert_lists(scenario: Scenario, kind: str) -> None:
    stub = job_pb2_grpc.JobManagerStub(scenario.server.channel(kind))
    scenario.result = call(stub.List, job_pb2.ListRequest())


@when("a client without a certificate asks for the list of jobs")
def _no_cert_lists(scenario: Scenario) -> None:
    stub = job_pb2_grpc.JobManagerStub(scenario.server.channel_without_certificate())
    scenario.result = call(stub.List, job_pb2.ListRequest())


@when("a client trusting only another CA asks for the list of jobs")
def _distrusting_lists(scenario: Scenario) -> None:
    stub = job_pb2_grpc.JobManagerStub(
        scenario.server.channel("admin", ca_path=scenario.server.pki.other_ca_path)
    )
    scenario.result = call(stub.List, job_pb2.ListRequest())


# ---- the second wall, driven directly ---------------------------------------------------------


class _Aborted(Exception):
    pass


class _FakeContext:
    """Just enough of a grpc.aio.ServicerContext for the guard."""

    def __init__(self, auth_context: dict[str, list[bytes]]) -> None:
        self._auth_context = auth_context
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth_context

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise _Aborted(details)


@dataclass
class _Details:
    method: str
    invocation_metadata: tuple[()] = ()


@given("the access guard every call passes through", target_fixture="guard")
def _the_guard() -> AccessGuard:
    return AccessGuard()


@when("an admin's List call arrives on a session reporting TLSv1.2")
def _tls12_session(guard: AccessGuard, scenario_pki: ScenarioPKI, scenario: Scenario) -> None:
    ran: list[bool] = []

    async def list_jobs(request: Any, context: Any) -> job_pb2.ListResponse:
        ran.append(True)
        return job_pb2.ListResponse()

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(list_jobs)

    context = _FakeContext(
        {
            "transport_security_type": [b"ssl"],
            "ssl_tls_version": [b"TLSv1.2"],
            "x509_pem_cert": [scenario_pki.client("admin").cert_pem],
        }
    )

    async def arrive() -> None:
        handler = await guard.intercept_service(continuation, _Details("/job.JobManager/List"))
        assert handler is not None
        try:
            await handler.unary_unary(job_pb2.ListRequest(), context)
        except _Aborted:
            pass

    asyncio.run(arrive())
    scenario.notes["context"], scenario.notes["ran"] = context, ran


@then(parsers.parse('the guard refuses it with {code} saying "{text}"'))
def _guard_refuses(scenario: Scenario, code: str, text: str) -> None:
    aborted = scenario.notes["context"].aborted
    assert aborted is not None, "the call was not refused"
    assert aborted[0] == grpc.StatusCode[code] and text in aborted[1], aborted


@then("the method never ran")
def _never_ran(scenario: Scenario) -> None:
    assert scenario.notes["ran"] == []
