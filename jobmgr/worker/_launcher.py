"""The launcher: one single-threaded process that starts, supervises and reaps every job.

The server runs grpcio's threads, and forking a threaded process to run Python in the child
is unsafe; so the worker execs this process once per state directory (``python -I -m
jobmgr.worker._launcher``), and it never starts a thread. It outlives the server, as conmon
and containerd-shim do: a restarted server reconnects and adopts the jobs still running.

  _launcher    this module: process set-up (lock, fd limit, subreaper, socket, readiness),
               then one loop that takes requests and runs each step in turn
  _pool        spare slots kept warm, so a start finds its namespaces made
  _supervisor  every slot's pipes and init: output into logs, reaping, deadlines, results
  _slot        a slot and its state machine
  _channel     the connection to the server; _shim is the contract spoken over it
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import logging
import os
import resource
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._capture import read_some
from ._channel import ServerChannel
from ._records import mark_lost
from ._shim import (
    LOCK_NAME,
    PROTOCOL_VERSION,
    READY,
    SOCKET_NAME,
    HelloReply,
    HelloRequest,
    ProtocolError,
    Request,
    RequestFailed,
    ShutdownReply,
    ShutdownRequest,
    StartRefused,
    StartRequest,
    StopRequest,
    decode_request,
)
from ._supervisor import Supervisor
from .cgroups import CgroupDriver, detect_driver

PR_SET_CHILD_SUBREAPER = 36
log = logging.getLogger("jobmgr.launcher")


class Launcher:
    """The loop: requests from the server in, events out, one step at a time."""

    def __init__(
        self, state_dir: Path, driver: CgroupDriver, spares: int, listener: socket.socket
    ) -> None:
        self._driver = driver
        self._sel = selectors.DefaultSelector()
        self._channel = ServerChannel(self._sel, listener, self._on_frame)
        self._supervisor = Supervisor(state_dir, driver, spares, self._sel, self._channel)
        self._shutting_down = False
        self._shutdown_waiters: list[int] = []

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._begin_shutdown(0.0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self._sel.register(wake_r, selectors.EVENT_READ, lambda _: _drain(wake_r))
        supervisor = self._supervisor
        supervisor.pool.refill()
        after_events = (
            supervisor.reap,
            supervisor.fire_deadlines,
            supervisor.announce_sizes,
            self._channel.flush,
            supervisor.pool.refill,
        )
        while not (self._shutting_down and supervisor.idle):
            for key, mask in self._sel.select(supervisor.next_deadline_in()):
                self._guarded(key.data, mask)
            for step in after_events:
                self._guarded(step)
        supervisor.pool.stop_zygote(reaped=supervisor.pool.zygote_pid in supervisor.unclaimed)
        for req in self._shutdown_waiters:
            self._channel.send_reply(req, ShutdownReply())
        self._driver.remove_parent()
        self._channel.flush(blocking=True)

    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        """Run one step of the loop; an unexpected error is logged, never fatal, since every
        running job depends on this process staying up."""
        try:
            step(*args)
        except Exception:
            log.exception("unexpected error, carrying on")

    def _on_frame(self, fields: dict[str, Any]) -> None:
        try:
            req, request = decode_request(fields)
        except ProtocolError as exc:
            log.error("a malformed request: %s", exc)
            if exc.req is not None:
                self._channel.send_reply(exc.req, RequestFailed(str(exc)))
            return
        try:
            self._on_request(req, request)
        except StartRefused as exc:
            self._channel.send_reply(req, exc.failure())
        except Exception as exc:  # a bad request must not take every job down with it
            log.exception("request %s failed", type(request).__name__)
            self._channel.send_reply(req, RequestFailed(str(exc) or repr(exc)))

    def _on_request(self, req: int, request: Request[Any]) -> None:
        match request:
            case StartRequest():
                self._supervisor.start(req, request)
            case StopRequest(id=job_id, grace=grace):
                self._supervisor.stop(req, job_id, grace)
            case HelloRequest(slots=slots):
                if slots is not None:
                    self._supervisor.pool.configure(slots)
                reply = HelloReply(PROTOCOL_VERSION, self._supervisor.running())
                self._channel.send_reply(req, reply)
            case ShutdownRequest(grace=grace):
                self._shutdown_waiters.append(req)
                self._begin_shutdown(grace)

    def _begin_shutdown(self, grace: float) -> None:
        self._shutting_down = True
        self._supervisor.stop_all(grace, "stopped at server shutdown")
        self._supervisor.pool.close()


def _drain(fd: int) -> None:
    while read_some(fd):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobmgr-launcher", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--cgroup-parent", required=True)
    parser.add_argument("--warm-slots", type=int, default=4)
    parser.add_argument(
        "--debug", action="store_true", help="log every slot's state transitions too"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        format="jobmgr-launcher: %(message)s",
        level=logging.DEBUG if args.debug else logging.INFO,
    )
    state: Path = args.state_dir
    lock_fd = os.open(state / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another launcher is running for {state}", file=sys.stderr)
        return 3
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # every init is reparented here, to be reaped
    # Each running job holds a few fds here (its pipes, its log); a soft limit of 1024 would
    # cap a server at about 250 jobs.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    driver = detect_driver(args.cgroup_parent)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    launcher = Launcher(state, driver, args.warm_slots, listener)
    mark_lost(state / "jobs", driver)  # before the first spare's cgroup is made, in serve()
    path = state / SOCKET_NAME
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(8)
    pid_fd = os.open(state / "launcher.pid", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(pid_fd, f"{os.getpid()}\n".encode())
    os.close(pid_fd)
    os.write(1, READY)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)  # nothing more for the worker to read there
    os.close(devnull)
    launcher.serve()
    path.unlink(missing_ok=True)
    (state / "launcher.pid").unlink(missing_ok=True)
    return 0


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


if __name__ == "__main__":
    sys.exit(main())
