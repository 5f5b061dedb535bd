"""The worker's end of one launcher connection: requests as futures, events to a callback.

Each connection also holds a pidfd of the launcher at its other end (SO_PEERPIDFD: the kernel
names the peer, so no pid is looked up), through which _keeper learns of its death and, should
it freeze, kills it. Copies of running jobs' handles come as JobHandles events with their
descriptors (see _fdpass), handed to ``on_handles``, which then owns them.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from ._errors import WorkerError, WorkerUnavailable
from ._fdpass import DescriptorsDropped, FdQueue, close_all, receive, send_all
from ._pidfd import ProcessHandle, pid_of
from ._shim import (
    PROTOCOL_VERSION,
    READY,
    SOCKET_NAME,
    ConnectionLost,
    Event,
    FrameDecoder,
    HelloReply,
    HelloRequest,
    JobHandles,
    LauncherBusy,
    ProtocolError,
    ReplyFrame,
    Request,
    RequestFailed,
    SlotSettings,
    decode_from_launcher,
    encode_request,
    fd_count,
)
from ._statedir import private_file, socket_address

log = logging.getLogger("jobmgr.worker")
R = TypeVar("R")
# The launcher and every job it starts inherit nothing from the server's environment: a job's
# environment is the one its request names (see _spec.DEFAULT_ENV).
LAUNCHER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
SO_PEERPIDFD = 77  # Linux 6.5+: a pidfd of the process at the other end of a unix socket


class LauncherClient:
    """Connects to the launcher of a state dir, starting one if none is running."""

    def __init__(
        self,
        state_dir: Path,
        cgroup_parent: str,
        warm_slots: int,
        on_event: Callable[[Event], None],
        on_handles: Callable[[JobHandles, list[int]], None],
    ) -> None:
        self._state_dir = state_dir
        self._on_event = on_event
        self._on_handles = on_handles
        # Per request: how to deliver its reply, and its future (to fail if the launcher goes).
        self._pending: dict[int, tuple[Callable[[ReplyFrame], None], Future[Any]]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        self.lost = threading.Event()  # set once the connection is gone
        self.descriptors_dropped = False  # it ended because this process ran out of them
        self.process: subprocess.Popen[bytes] | None = None
        self._sock = self._connect(state_dir) or self._spawn(state_dir, cgroup_parent, warm_slots)
        self.handle = self._launcher_handle()
        self._reader = threading.Thread(target=self._read_loop, name="jobmgr-launcher-events")
        self._reader.daemon = True
        self._reader.start()

    def request(
        self,
        message: Request[R],
        on_reply: Callable[[R | RequestFailed], None] | None = None,
        fds: list[int] | None = None,
    ) -> Future[R | RequestFailed]:
        """Send a request (with copies of ``fds``); the future gets the launcher's reply, or
        RequestFailed.

        ``on_reply`` runs on the event thread before any later event is delivered, which is
        where a new job must be registered so that none of its events is missed.
        """
        fut: Future[R | RequestFailed] = Future()
        reply_type = message.reply_type()

        def deliver(frame: ReplyFrame) -> None:
            try:
                reply = frame.open(reply_type)
            except ProtocolError as exc:
                fut.set_exception(exc)
                return
            if on_reply is not None:
                on_reply(reply)
            fut.set_result(reply)

        with self._lock:
            if self._closed:
                raise WorkerUnavailable("the job launcher's connection is closed")
            req = next(self._ids)
            self._pending[req] = (deliver, fut)
            try:
                fds = fds or []
                send_all(self._sock, encode_request(req, message, len(fds)), fds)
            except OSError as exc:
                del self._pending[req]
                raise WorkerUnavailable(f"the job launcher is gone: {exc}") from exc
        return fut

    def hello(self, timeout: float, slots: SlotSettings, handles: bool = True) -> HelloReply:
        """Greet the launcher, telling it how to make slots: the jobs it runs (and, with
        ``handles``, copies of their handles). A launcher of another protocol version is
        refused (WorkerError), since every later message could be misread."""
        try:
            reply = self.request(HelloRequest(PROTOCOL_VERSION, slots, handles)).result(timeout)
        except ProtocolError as exc:
            raise self._other_version(f"unknown ({exc})") from None
        if isinstance(reply, RequestFailed):
            raise self._other_version(f"unknown (it answered: {reply.error})")
        if reply.version != PROTOCOL_VERSION:
            raise self._other_version(str(reply.version))
        return reply

    def _other_version(self, version: str) -> WorkerError:
        return WorkerError(
            f"the job launcher running for {self._state_dir} speaks protocol version {version},"
            f" this server speaks {PROTOCOL_VERSION}; it keeps supervising its jobs. Stop it"
            f" (kill -TERM $(cat {self._state_dir}/launcher.pid) stops its jobs too), or run"
            " the jobmgr version that started it"
        )

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle is not None else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout=10)
        self._sock.close()
        if self.handle is not None:
            self.handle.close()

    def _connect(self, state_dir: Path) -> socket.socket | None:
        path = state_dir / SOCKET_NAME
        if not path.exists():
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with socket_address(path) as address:
                sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            return None
        return sock

    def _launcher_handle(self) -> ProcessHandle | None:
        """A pidfd of the launcher: from the kernel, for the socket's peer; or, on a kernel
        before 6.5, of the child this server spawned (not reaped yet: Popen reaps it only when
        asked). None for another's launcher on an old kernel: its death is then known from
        the connection alone."""
        try:
            raw = self._sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4)
        except OSError:
            if self.process is None:
                return None
            return ProcessHandle.of_child(self.process.pid)
        (fd,) = struct.unpack("i", raw)
        os.set_inheritable(fd, False)
        return ProcessHandle(fd, pid_of(fd))

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
        decoder = FrameDecoder()
        received = FdQueue()
        try:
            while True:
                data, fds = receive(self._sock, 1 << 20)
                received.add(fds)
                if not data:
                    break
                for fields in decoder.feed(data):
                    frame_fds = received.take(fd_count(fields))
                    try:
                        message = decode_from_launcher(fields)
                    except ProtocolError:
                        close_all(frame_fds)
                        log.exception("a message from the launcher does not parse")
                        continue
                    try:
                        self._deliver(message, frame_fds)
                    except Exception:  # one bad event must not stop every later one
                        log.exception("handling a message from the launcher failed")
        except DescriptorsDropped as exc:
            self.descriptors_dropped = True
            log.error("dropping the launcher's connection: %s", exc)
        except ProtocolError:
            log.exception("the launcher's connection is garbled; dropping it")
        except OSError:
            pass
        finally:
            received.close()
            with self._lock:
                self._closed = True
                pending, self._pending = self._pending, {}
            for _, fut in pending.values():
                fut.set_exception(
                    WorkerUnavailable(
                        "the job launcher went away before it answered; a new one takes over"
                        " its jobs: look at the job, and try again"
                    )
                )
            self.lost.set()
            self._on_event(ConnectionLost())

    def _deliver(self, message: Event | ReplyFrame, fds: list[int]) -> None:
        if isinstance(message, JobHandles):
            self._on_handles(message, fds)
            return
        close_all(fds)
        match message:
            case ReplyFrame(req=req):
                with self._lock:
                    waiting = self._pending.pop(req, None)
                if waiting is not None:
                    deliver, _ = waiting
                    deliver(message)
            case LauncherBusy():
                log.error("another server is using this state directory's launcher")
                self._sock.shutdown(socket.SHUT_RDWR)
            case _:
                self._on_event(message)
