"""The worker's end of the launcher connection: requests as futures, events to a callback."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from ._errors import WorkerError, WorkerUnavailable
from ._launcher import READY, SOCKET_NAME
from ._protocol import Decoder, Message, encode
from ._statedir import private_file

log = logging.getLogger("jobmgr.worker")
OnReply = Callable[[Message], None]
# The launcher and every job it starts inherit nothing from the server's environment: a job's
# environment is the one its request names (see _spec.DEFAULT_ENV).
LAUNCHER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


class LauncherClient:
    """Connects to the launcher of a state dir, starting one if none is running."""

    def __init__(
        self,
        state_dir: Path,
        cgroup_parent: str,
        warm_slots: int,
        on_event: Callable[[Message], None],
    ) -> None:
        self._on_event = on_event
        self._pending: dict[int, tuple[Future[Message], OnReply | None]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        self.process: subprocess.Popen[bytes] | None = None
        self._sock = self._connect(state_dir) or self._spawn(state_dir, cgroup_parent, warm_slots)
        self._reader = threading.Thread(target=self._read_loop, name="jobmgr-launcher-events")
        self._reader.daemon = True
        self._reader.start()

    def request(self, message: Message, on_reply: OnReply | None = None) -> Future[Message]:
        """Send a request; the future gets the launcher's reply message.

        ``on_reply`` runs on the event thread before any later event is delivered, which is
        where a new job must be registered so that none of its events is missed.
        """
        fut: Future[Message] = Future()
        with self._lock:
            if self._closed:
                raise WorkerUnavailable("the launcher connection is closed")
            req = next(self._ids)
            self._pending[req] = (fut, on_reply)
            try:
                self._sock.sendall(encode({**message, "req": req}))
            except OSError as exc:
                del self._pending[req]
                raise WorkerUnavailable(f"the launcher is gone: {exc}") from exc
        return fut

    def close(self) -> None:
        with self._lock:
            self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout=10)
        self._sock.close()

    def _connect(self, state_dir: Path) -> socket.socket | None:
        path = state_dir / SOCKET_NAME
        if not path.exists():
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            return None
        return sock

    def _spawn(self, state_dir: Path, cgroup_parent: str, warm_slots: int) -> socket.socket:
        log_path = state_dir / "launcher.log"
        log_fd = private_file(log_path)
        try:
            # fork+exec of a fresh interpreter: no Python code runs in a forked copy of us.
            # Isolated (-I): neither the server's working directory (which `-m` would put
            # first on sys.path, where a job could plant a module) nor PYTHON* variables nor
            # user site-packages decide what this root process imports.
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-m",
                    "jobmgr.worker._launcher",
                    "--state-dir",
                    str(state_dir),
                    "--cgroup-parent",
                    cgroup_parent,
                    "--warm-slots",
                    str(warm_slots),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_fd,
                start_new_session=True,
                cwd="/",
                env=LAUNCHER_ENV,
            )
        finally:
            os.close(log_fd)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.process.stdout.close()
        if line != READY:
            self.process.wait()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise WorkerError("the job launcher failed to start: " + " | ".join(tail))
        sock = self._connect(state_dir)
        if sock is None:
            raise WorkerUnavailable("the job launcher started but does not accept connections")
        return sock

    def _read_loop(self) -> None:
        decoder = Decoder()
        try:
            while True:
                data = self._sock.recv(1 << 20)
                if not data:
                    break
                for message in decoder.feed(data):
                    try:
                        self._deliver(message)
                    except Exception:  # one bad event must not stop every later one
                        log.exception("handling launcher event %r failed", message.get("ev"))
        except OSError:
            pass
        finally:
            with self._lock:
                self._closed = True
                pending, self._pending = self._pending, {}
            for fut, _ in pending.values():
                fut.set_exception(WorkerUnavailable("the launcher connection was lost"))
            self._on_event({"ev": "disconnected"})

    def _deliver(self, message: Message) -> None:
        if message.get("ev") == "reply":
            with self._lock:
                waiting = self._pending.pop(message.get("req", -1), None)
            if waiting is not None:
                fut, on_reply = waiting
                if on_reply is not None:
                    on_reply(message)
                fut.set_result(message)
        elif message.get("ev") == "busy":
            log.error("another server is using this state directory's launcher")
            self._sock.shutdown(socket.SHUT_RDWR)
        else:
            self._on_event(message)
