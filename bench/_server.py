"""The servers under test, run by the harness as subprocesses in the bench's temporary
directory: ``jobmgr-server`` and the bare grpcio baseline, with certificates made by jobmgr's
own PKI code; and the bench's ``grpc.aio`` clients of them.

Both listen on 127.0.0.1 only and speak mutual TLS 1.3 with the same CA and server
certificate.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

# jobmgr.api (the harness imports it first) before grpc: it makes this process refuse TLS 1.2,
# so every channel is TLS 1.3.
from harness.pki import ServerFiles
from harness.server import ListeningProcess, ServerProcess
from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc
from jobmgr.pki import write_bundle

import grpc  # isort: skip

HOST = "127.0.0.1"
CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # Each channel its own TCP connection, as separate clients would have.
    ("grpc.use_local_subchannel_pool", 1),
]


class BenchError(RuntimeError):
    """A server did not clean up after itself."""


def make_certs(directory: Path) -> Path:
    """A CA, a server certificate and client pairs, written by ``jobmgr.pki``."""
    write_bundle(directory)
    return directory


def start_jobmgr(workdir: Path, certs: Path) -> ServerProcess:
    """``jobmgr-server`` as root, in a directory of its own with its own cgroup parent."""
    parent = f"jobmgr-bench-{uuid.uuid4().hex[:8]}"
    directory = workdir / parent
    directory.mkdir()
    server = ServerProcess(ServerFiles.in_dir(certs), directory, parent, host=HOST)
    server.start()
    return server


def stop_jobmgr(server: ServerProcess) -> None:
    """Stop it and check it left nothing behind (clearing what it left, then raising)."""
    problems = server.shut_down()
    shutil.rmtree(server.state_dir, ignore_errors=True)
    if problems:
        raise BenchError("; ".join(problems))


def start_bare(workdir: Path, certs: Path) -> ListeningProcess:
    """The baseline: ``bench._baseline``, a bare grpcio server-streaming RPC."""
    argv = [sys.executable, "-m", "bench._baseline", "--host", HOST, "--certs", str(certs)]
    server = ListeningProcess("bare-grpc", argv, workdir, HOST)
    server.start()
    return server


def channel(target: str, certs: Path, kind: str = "client_admin") -> grpc.aio.Channel:
    """A new mTLS channel (and TCP connection) presenting client certificate ``kind``."""
    credentials = channel_credentials(
        ca_pem=(certs / "ca.pem").read_bytes(),
        cert_pem=(certs / f"{kind}.pem").read_bytes(),
        key_pem=(certs / f"{kind}.key").read_bytes(),
    )
    return grpc.aio.secure_channel(target, credentials, options=CLIENT_OPTIONS)


async def warm_stub(
    target: str, certs: Path
) -> tuple[grpc.aio.Channel, job_pb2_grpc.JobManagerStub]:
    """A channel to jobmgr-server, connected and past its first RPCs."""
    chan = channel(target, certs)
    stub = job_pb2_grpc.JobManagerStub(chan)
    for _ in range(3):
        await stub.List(job_pb2.ListRequest(state=job_pb2.JOB_STATE_RUNNING))
    return chan, stub
