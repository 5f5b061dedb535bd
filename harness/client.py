"""A test's client of one jobmgr server, in this process or a program: channels presenting one
of the scenario's certificates, and the calls steps make again and again.

Every channel it opens is closed by ``close_channels`` (the fixtures call it at teardown).
``stub(kind)`` shares one channel per certificate kind: a channel per call kept thousands of
connections open through a long scenario. A step that wants clients on connections of their
own opens a ``channel`` for each.
"""

from __future__ import annotations

# Before grpc: importing jobmgr.api makes gRPC refuse TLS 1.2 in this process.
import jobmgr.api  # noqa: F401  # isort: skip

from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from .pki import ScenarioPKI
from .rpc import CALL_TIMEOUT
from .speed import scaled

MiB = 1024 * 1024
# The client never stands in the way: the server's own message limit is what is tested.
CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", 64 * MiB),
]
SERVICE = "/job.JobManager/"


class Client:
    """The client side of one server at ``host:port``, holding the scenario's certificates."""

    host: str
    port: int

    def __init__(self, pki: ScenarioPKI) -> None:
        self.pki = pki
        self._channels: list[grpc.Channel] = []
        self._stubs: dict[str, job_pb2_grpc.JobManagerStub] = {}

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def assert_up(self) -> None:
        """Fail, saying how it ended, if the server is gone (a program may die; a server in
        this process lasts as long as its fixture)."""

    # ---- channels -----------------------------------------------------------------------------

    def credentials(
        self, kind: str = "admin", *, ca_path: Path | None = None
    ) -> grpc.ChannelCredentials:
        """Credentials presenting the client certificate ``kind``, trusting the scenario's CA
        (or the CA in ``ca_path``)."""
        pair = self.pki.client(kind)
        ca_pem = ca_path.read_bytes() if ca_path else self.pki.ca_pem
        return channel_credentials(ca_pem=ca_pem, cert_pem=pair.cert_pem, key_pem=pair.key_pem)

    def channel(self, kind: str = "admin", *, ca_path: Path | None = None) -> grpc.Channel:
        """A new channel (and connection) presenting the client certificate ``kind``."""
        self.assert_up()
        credentials = self.credentials(kind, ca_path=ca_path)
        return self._keep(grpc.secure_channel(self.target, credentials, options=CLIENT_OPTIONS))

    def channel_without_certificate(self) -> grpc.Channel:
        """A new channel trusting the scenario's CA and presenting no certificate."""
        credentials = grpc.ssl_channel_credentials(root_certificates=self.pki.ca_pem)
        return self._keep(grpc.secure_channel(self.target, credentials, options=CLIENT_OPTIONS))

    def stub(self, kind: str = "admin") -> job_pb2_grpc.JobManagerStub:
        """A stub on the one shared channel of certificate ``kind``."""
        self.assert_up()
        if kind not in self._stubs:
            self._stubs[kind] = job_pb2_grpc.JobManagerStub(self.channel(kind))
        return self._stubs[kind]

    def raw_method(self, method: str) -> Callable[..., bytes]:
        """A method of the job service that sends bytes as they are and hands back the
        reply's bytes (Output: a stream of them)."""
        channel = self.channel()
        identity: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
        make = channel.unary_stream if method == "Output" else channel.unary_unary
        call: Callable[..., bytes] = make(SERVICE + method, identity, identity)
        return call

    def close_channels(self) -> None:
        self._stubs.clear()
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def _keep(self, channel: grpc.Channel) -> grpc.Channel:
        self._channels.append(channel)
        return channel

    def client_args(self, kind: str = "admin") -> list[str]:
        """Global jobmgr-client flags to reach this server with client certificate ``kind``."""
        pair = self.pki.client(kind)
        return [
            "--host", self.host, "--port", str(self.port), "--ca", str(self.pki.ca_path),
            "--cert", str(pair.cert_path), "--key", str(pair.key_path),
        ]  # fmt: skip

    # ---- jobs ---------------------------------------------------------------------------------

    def start_job(
        self, argv: Sequence[str], limits: job_pb2.Limits | None = None, kind: str = "admin"
    ) -> str:
        """Start ``argv`` as ``kind``; the new job's id."""
        request = job_pb2.StartRequest(cmd=argv[0], args=argv[1:], limits=limits)
        return str(self.stub(kind).Start(request, timeout=scaled(CALL_TIMEOUT)).uuid)

    def status(self, job_id: str, kind: str = "admin") -> job_pb2.StatusResponse:
        request = job_pb2.StatusRequest(uuid=job_id)
        stub = self.stub(kind)
        status: job_pb2.StatusResponse = stub.Status(request, timeout=scaled(CALL_TIMEOUT))
        return status

    def output(self, job_id: str, *, follow: bool = True, timeout: float = 60.0) -> bytes:
        """The job's stdout and stderr bytes, in order (to its end when following, within
        ``timeout``, scaled)."""
        request = job_pb2.OutputRequest(uuid=job_id, no_follow=not follow)
        return b"".join(m.output for m in self.stub().Output(request, timeout=scaled(timeout)))

    def wait_ended(self, job_id: str, timeout: float = 60.0) -> job_pb2.StatusResponse:
        """Follow the job's output to its end (no polling), then return its final status."""
        self.output(job_id, timeout=timeout)
        status = self.status(job_id)
        assert status.state != job_pb2.JOB_STATE_RUNNING, f"the output ended, not the job: {status}"
        return status

    def list_ids(self) -> list[str]:
        reply = self.stub().List(job_pb2.ListRequest(), timeout=scaled(CALL_TIMEOUT))
        return [job.uuid for job in reply.jobs]
