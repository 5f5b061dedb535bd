"""A real ``JobServer`` in this process: its asyncio loop on a thread of its own, a free port
on localhost, over a ``Worker`` the caller made."""

from __future__ import annotations

# Before grpc: importing jobmgr.api makes gRPC refuse TLS 1.2 in this process.
import jobmgr.api  # noqa: F401  # isort: skip

import asyncio
import threading
from typing import Any

from jobmgr.api import JobServer
from jobmgr.worker import Worker

from .client import Client
from .pki import ScenarioPKI
from .speed import scaled

START_TIMEOUT = 30.0


class RunningServer(Client):
    """An in-process server and a client of it holding the scenario's certificates."""

    def __init__(self, port: int, pki: ScenarioPKI, worker: Worker) -> None:
        super().__init__(pki)
        self.host = "localhost"
        self.port = port
        self.worker = worker


class ServerThread:
    """Runs a JobServer on an event loop in a background thread."""

    def __init__(self, server: JobServer) -> None:
        self._server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jobmgr-test-server", daemon=True
        )

    def start(self) -> int:
        """Start serving; the port it listens on."""
        self._thread.start()
        port: int = self._call(self._server.start())
        return port

    def stop(self) -> None:
        try:
            self._call(self._server.stop(0))
            self._call(self._loop.shutdown_asyncgens())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(scaled(START_TIMEOUT))
