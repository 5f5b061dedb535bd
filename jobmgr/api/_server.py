"""Assembly: a ``grpc.aio`` server with mTLS, its connection limits (gRPC core's, the
connection gate's and the admission interceptor's), the call log, the access guard, the
JobManager service, standard health checking and server reflection; and its reload."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from jobmgr.worker import Worker

from ._admission import Admission
from ._auth import HEALTH_SERVICE, ROLE_POLICY, SERVICE
from ._calllog import CallLog
from ._gate import ConnectionGate, GateError
from ._guard import AccessGuard
from ._limits import ConnectionLimits, fd_limit
from ._mapping import encoded
from ._proto import job_pb2 as pb
from ._service import ALL_JOBS_VISIBLE, JobManagerService, JobVisibility
from ._tls import ServerCertificates, check_server_material
from ._trust import ClientTrust, load_crls
from ._wire import DEFAULT_PORT, KEEPALIVE_MS, MAX_MESSAGE_BYTES

SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A second server on a taken port is a mistake to report, not a peer to share it with.
    ("grpc.so_reuseport", 0),
    # Clients ping to notice a vanished server while they follow a silent job (see _wire).
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
)


@dataclass(frozen=True)
class ServerTLS:
    """PEM bytes of the CA that signs client certificates, the server's own pair, and the
    CA's certificate revocation list (None: nothing is revoked).

    Checked when made: ValueError names what is wrong with them (CRLError for the CRL).
    """

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    crl_pem: bytes | None = None

    def __post_init__(self) -> None:
        check_server_material(ca_pem=self.ca_pem, cert_pem=self.cert_pem, key_pem=self.key_pem)
        if self.crl_pem is not None:
            load_crls(self.crl_pem, x509.load_pem_x509_certificates(self.ca_pem))

    @classmethod
    def from_files(
        cls, ca: str | Path, cert: str | Path, key: str | Path, crl: str | Path | None = None
    ) -> ServerTLS:
        """Read the PEM files: OSError if one cannot be read, ValueError if they are not a
        CA certificate, a certificate, its key and a CRL of that CA."""
        crl_pem = None if crl is None else Path(crl).read_bytes()
        return cls(Path(ca).read_bytes(), Path(cert).read_bytes(), Path(key).read_bytes(), crl_pem)


def _add_job_manager(service: JobManagerService, server: grpc.aio.Server) -> None:
    """What ``add_JobManagerServicer_to_server`` does, but Output's handler yields its
    messages already encoded (see ``output_to_wire``) and they are sent as they are."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["JobManager"].methods:
        assert not method.client_streaming, "no JobManager RPC streams requests"
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(service, method.name),
            request_deserializer=request.FromString,
            response_serializer=encoded if method.name == "Output" else response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _health_status(available: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    if available:
        return health_pb2.HealthCheckResponse.SERVING
    return health_pb2.HealthCheckResponse.NOT_SERVING


class BindError(RuntimeError):
    """The server could not listen on the address asked for."""


class JobServer:
    """Serves ``worker`` over gRPC with mutual TLS 1.3 on ``host:port``.

    Create and use it inside a running event loop. ``port`` 0 picks a free port; ``start``
    returns the one bound. ``policy`` maps each role to the methods it may call (health
    checking and reflection included: every call is guarded); ``visibility`` says which roles
    see only their own jobs; ``limits`` caps what clients may hold at once (by default, what
    ``ConnectionLimits.for_fd_limit`` derives from this process's file descriptor limit).
    ``reload`` replaces the TLS material, policy and visibility while it serves (the limits
    stay). Closing the worker is the caller's business.
    """

    def __init__(
        self,
        worker: Worker,
        tls: ServerTLS,
        *,
        host: str = "localhost",
        port: int = DEFAULT_PORT,
        policy: Mapping[str, frozenset[str]] = ROLE_POLICY,
        visibility: JobVisibility = ALL_JOBS_VISIBLE,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self._worker = worker
        self.limits = limits or ConnectionLimits.for_fd_limit(fd_limit())
        self._certificates = ServerCertificates(
            ca_pem=tls.ca_pem, cert_pem=tls.cert_pem, key_pem=tls.key_pem
        )
        self._guard = AccessGuard(policy, ClientTrust(tls.ca_pem, tls.crl_pem))
        self._service = JobManagerService(worker, visibility)
        self._health: HealthServicer | None = None
        self.host = host
        self.port = port
        self._server: grpc.aio.Server | None = None
        self._gate: ConnectionGate | None = None

    @property
    def address(self) -> str:
        """``host:port`` as a client would dial it (IPv6 literals bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> int:
        """Bind and start serving; returns the port. Raises BindError if binding fails."""
        credentials = self._certificates.credentials()
        # Admission first, so a call past a limit costs nothing more; then the call log, so it
        # wraps the guard and also records the calls refused.
        interceptors = [Admission(self.limits), CallLog(), self._guard]
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[*SERVER_OPTIONS, *self.limits.grpc_options()],
            maximum_concurrent_rpcs=self.limits.grpc_rpc_cap,
        )
        _add_job_manager(self._service, server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        try:
            port: int = server.add_secure_port(self.address, credentials)
        except RuntimeError:
            port = 0  # gRPC has logged why
        if port == 0:
            raise BindError(f"cannot listen on {self.address}")
        self.port = port
        await server.start()
        try:
            gate = ConnectionGate(port, self.limits)
        except (GateError, OSError) as exc:
            await server.stop(None)
            raise BindError(f"cannot watch the connections on {self.address}: {exc}") from None
        gate.start()
        await health.set(SERVICE, _health_status(self._worker.available))
        self._server, self._health, self._gate = server, health, gate
        self._follow_worker(asyncio.get_running_loop(), health)
        return port

    def _follow_worker(self, loop: asyncio.AbstractEventLoop, health: HealthServicer) -> None:
        """Health says SERVING while the worker's launcher serves, NOT_SERVING while not."""

        async def set_both(status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
            for service in (SERVICE, ""):  # "" is the server as a whole
                await health.set(service, status)

        def follow(available: bool) -> None:
            status = _health_status(available)
            try:
                loop.call_soon_threadsafe(lambda: loop.create_task(set_both(status)))
            except RuntimeError:
                pass  # the server's loop is closed: nobody is asking any more

        self._worker.watch_availability(follow)

    def reload(
        self,
        tls: ServerTLS,
        *,
        policy: Mapping[str, frozenset[str]],
        visibility: JobVisibility,
        run_as: str | None,
        allowed_run_as: Collection[str] | None,
    ) -> int:
        """Serve with these from now on, without stopping a job or dropping a connection: the
        next TLS handshake uses the new certificate, key and CA; every call from now on is
        judged by the new CA, CRL and policy, and open streams these would refuse now end
        (see _guard); jobs started from now on follow the new run-as policy. Returns how many
        streams it ends. Call it on the server's event loop, with material already checked
        (ServerTLS checks itself when made)."""
        self._certificates.replace(ca_pem=tls.ca_pem, cert_pem=tls.cert_pem, key_pem=tls.key_pem)
        self._service.visibility = visibility
        self._worker.set_run_as(run_as, allowed_run_as)
        return self._guard.update(policy, ClientTrust(tls.ca_pem, tls.crl_pem))

    async def not_serving(self) -> None:
        """Tell health checkers this server is going away (NOT_SERVING), before it stops."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float | None = 1.0) -> None:
        """Refuse new RPCs, give running ones ``grace`` seconds, then cancel them."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()  # watchers learn NOT_SERVING
            self._health = None
        if self._gate is not None:
            # Before gRPC closes its listening sockets: the gate holds duplicates of them.
            self._gate.stop()
            self._gate = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        if self._server is not None:
            await self._server.wait_for_termination()
