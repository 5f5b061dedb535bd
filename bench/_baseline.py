"""The baseline for the output rows: a bare grpcio server-streaming RPC over the same mTLS.

Run as ``python -m bench._baseline --certs DIR``; prints ``listening at HOST:PORT``. One
method, ``/bench.Bare/Stream``: the request is a byte count (ASCII digits), the reply that
many zero bytes as ``job.OutputResponse`` messages of 1 MiB, the same message type and size
jobmgr's Output sends. Nothing is read from disk and one message is reused: this is the most
a grpc.aio server in Python can send on this machine, the figure jobmgr is held against.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from jobmgr.api import job_pb2, set_tls13_floor
from jobmgr.cli._malloc import keep_freed_memory

import grpc  # isort: skip

STREAM_METHOD = "/bench.Bare/Stream"
MESSAGE_BYTES = 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", 4 * MESSAGE_BYTES),
    ("grpc.max_receive_message_length", 4 * MESSAGE_BYTES),
]


async def _stream(
    request: bytes, context: grpc.aio.ServicerContext
) -> AsyncIterator[job_pb2.OutputResponse]:
    remaining = int(request)
    full = job_pb2.OutputResponse(output=bytes(MESSAGE_BYTES), stream=job_pb2.STREAM_STDOUT)
    while remaining >= MESSAGE_BYTES:
        yield full
        remaining -= MESSAGE_BYTES
    if remaining:
        yield job_pb2.OutputResponse(output=bytes(remaining), stream=job_pb2.STREAM_STDOUT)


async def _serve(host: str, certs: Path) -> None:
    credentials = grpc.ssl_server_credentials(
        [((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    handler = grpc.method_handlers_generic_handler(
        "bench.Bare",
        {
            "Stream": grpc.unary_stream_rpc_method_handler(
                _stream,
                request_deserializer=None,
                response_serializer=job_pb2.OutputResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port(f"{host}:0", credentials)
    await server.start()
    print(f"listening at {host}:{port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(0)


def stream_call(chan: grpc.aio.Channel) -> grpc.aio.UnaryStreamMultiCallable:
    """The client's handle on the baseline stream: call it with the byte count as ASCII."""
    return chan.unary_stream(
        STREAM_METHOD,
        request_serializer=None,
        response_deserializer=job_pb2.OutputResponse.FromString,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--certs", required=True, type=Path)
    args = parser.parse_args()
    set_tls13_floor()
    keep_freed_memory()
    asyncio.run(_serve(args.host, args.certs))


if __name__ == "__main__":
    main()
