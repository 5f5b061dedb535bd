"""Floods for the limit scenarios of features/hardening.feature: Output streams of one
certificate, and bare TCP connections, opened and held on an event loop of their own.

``Flood`` runs in a thread of the test process (the short scenarios); ``python -m
steps._floods`` runs one in a process of its own (the measured scenario, so that the
flood's Python does not share a GIL with the client being timed): it prints one ``ready``
line of JSON once every stream and connection has been tried, and its final counts, as
JSON, when it gets SIGTERM. A slot the server refuses or closes is tried again after
``retry`` seconds (never, if 0): that is what holding a flood means.
"""

from __future__ import annotations

# Before grpc: see fixtures_pki.
import jobmgr.api  # noqa: F401  # isort: skip

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from ._bare_connections import FLOOD_SOURCE

OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # each channel its own connection
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]


@dataclass
class FloodPlan:
    """What to open: ``streams`` Output streams of ``job`` spread over ``connections``
    channels presenting ``cert``, and ``idle`` bare TCP connections from FLOOD_SOURCE."""

    target: str
    port: int
    ca: bytes
    cert: bytes
    key: bytes
    job: str = ""
    streams: int = 0
    connections: int = 1
    idle: int = 0
    retry: float = 0.0


@dataclass
class FloodCounts:
    """What the flood has seen so far."""

    streaming: int = 0  # streams open now that have had a message
    refused: Counter[str] = field(default_factory=Counter)  # code name -> times
    details: dict[str, str] = field(default_factory=dict)  # code name -> a message
    idle_open: int = 0
    idle_closed: int = 0  # times the server closed an idle connection
    tried: int = 0  # slots tried at least once

    def as_dict(self) -> dict[str, Any]:
        return {
            "streaming": self.streaming,
            "refused": dict(self.refused),
            "details": self.details,
            "idle_open": self.idle_open,
            "idle_closed": self.idle_closed,
            "tried": self.tried,
        }


class Flood:
    """One flood on an event loop in a thread of its own: ``start``, ``counts``, ``stop``."""

    def __init__(self, plan: FloodPlan) -> None:
        self.plan = plan
        self.counts = FloodCounts()
        self.ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopping: asyncio.Event | None = None
        self._main: Any = None

    def start(self, timeout: float = 120.0) -> FloodCounts:
        """Start, and return once every slot has been tried once."""
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        if not self.ready.wait(timeout):
            raise AssertionError(f"the flood was not under way within {timeout:g}s")
        return self.counts

    def stop(self) -> FloodCounts:
        """End every stream and connection, stop the loop; the final counts. Idempotent."""
        if self._loop.is_closed():
            return self.counts
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._main is not None:
            with contextlib.suppress(Exception):
                self._main.result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        return self.counts

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        plan = self.plan
        credentials = channel_credentials(ca_pem=plan.ca, cert_pem=plan.cert, key_pem=plan.key)
        channels = [
            grpc.aio.secure_channel(plan.target, credentials, options=OPTIONS)
            for _ in range(plan.connections if plan.streams else 0)
        ]
        tried: list[asyncio.Event] = []
        tasks = []
        for index in range(plan.streams):
            stub = job_pb2_grpc.JobManagerStub(channels[index % len(channels)])
            tried.append(asyncio.Event())
            tasks.append(asyncio.create_task(self._stream(stub, tried[-1])))
        for _ in range(plan.idle):
            tried.append(asyncio.Event())
            tasks.append(asyncio.create_task(self._idle(tried[-1])))
        try:
            await asyncio.gather(*(event.wait() for event in tried))
            self.counts.tried = len(tried)
            self.ready.set()
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in channels:
                await channel.close()

    async def _stream(self, stub: job_pb2_grpc.JobManagerStub, tried: asyncio.Event) -> None:
        request = job_pb2.OutputRequest(uuid=self.plan.job, tail=1)
        while True:
            call = stub.Output(request)
            counted = False
            try:
                async for _ in call:
                    if not counted:
                        counted = True
                        self.counts.streaming += 1
                        tried.set()
            except grpc.aio.AioRpcError as exc:
                name = exc.code().name
                self.counts.refused[name] += 1
                self.counts.details.setdefault(name, exc.details() or "")
            finally:
                if counted:
                    self.counts.streaming -= 1
                call.cancel()
            tried.set()
            if not self.plan.retry:
                await asyncio.Event().wait()  # hold the slot's outcome: wait to be cancelled
            await asyncio.sleep(self.plan.retry)

    async def _idle(self, tried: asyncio.Event) -> None:
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.plan.port, local_addr=(FLOOD_SOURCE, 0)
                )
                self.counts.idle_open += 1
                tried.set()
                try:
                    await reader.read(1)  # returns at the server's close
                finally:
                    self.counts.idle_open -= 1
                self.counts.idle_closed += 1
            except OSError:
                self.counts.idle_closed += 1
            finally:
                if writer is not None:
                    writer.close()
            tried.set()
            if not self.plan.retry:
                await asyncio.Event().wait()
            await asyncio.sleep(self.plan.retry)


def main() -> int:
    parser = argparse.ArgumentParser(description="hold a flood until SIGTERM")
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--job", default="")
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--idle", type=int, default=0)
    parser.add_argument("--retry", type=float, default=0.0)
    args = parser.parse_args()
    plan = FloodPlan(
        args.target, args.port, args.ca.read_bytes(), args.cert.read_bytes(),
        args.key.read_bytes(), args.job, args.streams, args.connections, args.idle, args.retry,
    )  # fmt: skip
    flood = Flood(plan)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    counts = flood.start()
    print("ready " + json.dumps(counts.as_dict()), flush=True)
    done.wait()
    print("final " + json.dumps(flood.stop().as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
