"""The launcher: one single-threaded process that starts, supervises and reaps every job.

The server runs grpcio's threads, and forking a threaded process to run Python in the child
is unsafe; so the worker execs this process once per state directory (``python -I -m
jobmgr.worker._launcher``), and it never starts a thread. It outlives the server, as conmon
and containerd-shim do: a restarted server reconnects and adopts the jobs still running.

  _launcher    this module: process set-up (lock, fd limit, subreaper, socket, readiness),
               then one loop that takes requests and runs each step in turn
  _pool        spare slots kept warm, so a start finds its namespaces made
  _supervisor  every slot's pipes and init: output into logs, reaping, deadlines, results
  _pidfd       processes by handle: the inits' and the zygote's pidfds
  _slot        a slot and its state machine
  _reclaim     at the first hello: what a dead launcher left, finished and cleared
  _channel     the connection to the server; _shim is the contract spoken over it

Nothing of what a dead launcher left is touched before the first hello: the server may hand
back jobs to re-adopt, and only then is the rest finished as LOST and the first spare made.
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._capture import read_some
from ._channel import ServerChannel
from ._fdpass import close_all
from ._reclaim import HEARTBEAT, reclaim
from ._shim import (
    LOCK_NAME,
    PROTOCOL_VERSION,
    READY,
    SOCKET_NAME,
    AdoptRequest,
    DamagedLog,
    HelloReply,
    HelloRequest,
    PingReply,
    PingRequest,
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
from ._slot import JOB_STATES
from ._statedir import socket_address
from ._supervisor import Supervisor
from .cgroups import CgroupDriver, detect_driver

PR_SET_CHILD_SUBREAPER = 36
log = logging.getLogger("jobmgr.launcher")


class Launcher:
    """The loop: requests from the server in, events out, one step at a time."""

    def __init__(
        self,
        state_dir: Path,
        driver: CgroupDriver,
        spares: int,
        listener: socket.socket,
        last_seen: float | None,
    ) -> None:
        self._state_dir = state_dir
        self._driver = driver
        self._sel = selectors.DefaultSelector()
        self._channel = ServerChannel(self._sel, listener, self._on_frame)
        self._supervisor = Supervisor(state_dir, driver, spares, self._sel, self._channel)
        self._shutting_down = False
        self._shutdown_waiters: list[int] = []
        self._last_seen = last_seen  # the previous launcher's last heartbeat, if it died
        self._reclaimed = False  # what a dead launcher left is dealt with at the first hello
        self._reclaim_report: tuple[tuple[str, ...], tuple[DamagedLog, ...]] = ((), ())
        self._heartbeat_at = 0.0

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
        after_events = (
            supervisor.reap_strays,
            supervisor.fire_deadlines,
            supervisor.announce_sizes,
            self._channel.flush,
            self._refill,
            self._heartbeat,
        )
        while not (self._shutting_down and supervisor.idle):
            due = supervisor.next_deadline_in()
            for key, mask in self._sel.select(HEARTBEAT if due is None else min(due, HEARTBEAT)):
                self._guarded(key.data, mask)
            for step in after_events:
                self._guarded(step)
        supervisor.pool.stop_zygote()
        for req in self._shutdown_waiters:
            self._channel.send_reply(req, ShutdownReply())
        self._driver.remove_parent()
        self._channel.flush(blocking=True)

    def _refill(self) -> None:
        if self._reclaimed:
            self._supervisor.pool.refill()

    def _heartbeat(self) -> None:
        """Touch launcher.pid now and then: a successor dates its lost jobs by it."""
        now = time.monotonic()
        if now - self._heartbeat_at >= HEARTBEAT:
            self._heartbeat_at = now
            os.utime(self._state_dir / "launcher.pid")

    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        """Run one step of the loop; an unexpected error is logged, never fatal, since every
        running job depends on this process staying up."""
        try:
            step(*args)
        except Exception:
            log.exception("unexpected error, carrying on")

    def _on_frame(self, fields: dict[str, Any], fds: list[int]) -> None:
        try:
            req, request = decode_request(fields)
        except ProtocolError as exc:
            close_all(fds)
            log.error("a malformed request: %s", exc)
            if exc.req is not None:
                self._channel.send_reply(exc.req, RequestFailed(str(exc)))
            return
        if isinstance(request, AdoptRequest):
            if len(fds) != len(request.handles.streams):
                close_all(fds)
                failure = RequestFailed("the descriptors do not match the handles named")
                self._channel.send_reply(req, failure)
            else:  # only before the first hello, which finishes the rest, may a job be new
                self._supervisor.adopt(req, request.handles, fds, new=not self._reclaimed)
            return
        close_all(fds)
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
            case HelloRequest(slots=slots, handles=handles):
                lost, damaged = self._reclaim()  # before any spare is made
                if slots is not None:
                    self._supervisor.pool.configure(slots)
                for slot in self._supervisor.jobs.values():
                    if handles and slot.state in JOB_STATES:
                        self._supervisor.send_handles(slot)
                running = self._supervisor.running()
                reply = HelloReply(PROTOCOL_VERSION, running, self._driver.parent, lost, damaged)
                self._channel.send_reply(req, reply)
            case PingRequest():
                self._channel.send_reply(req, PingReply())
            case ShutdownRequest(grace=grace):
                self._shutdown_waiters.append(req)
                self._begin_shutdown(grace)

    def _reclaim(self) -> tuple[tuple[str, ...], tuple[DamagedLog, ...]]:
        """At the first hello: what a dead launcher left, finished (see _reclaim); the jobs
        finished as LOST and the damaged logs, said in every later answer too (a server that
        connects later logs the damage again: it is still there)."""
        if not self._reclaimed:
            self._reclaimed = True
            keep = {job.id for job in self._supervisor.running()}
            lost, damaged = reclaim(self._state_dir, self._driver, keep, self._last_seen)
            self._reclaim_report = (tuple(lost), tuple(damaged))
        return self._reclaim_report

    def _begin_shutdown(self, grace: float) -> None:
        self._shutting_down = True
        self._supervisor.begin_shutdown(grace)


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
    launcher = Launcher(state, driver, args.warm_slots, listener, _last_seen(state))
    path = state / SOCKET_NAME
    path.unlink(missing_ok=True)
    with socket_address(path) as address:
        listener.bind(address)
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


def _last_seen(state: Path) -> float | None:
    """When the previous launcher was last alive, if it died (a launcher that exits cleanly
    removes launcher.pid)."""
    try:
        return (state / "launcher.pid").stat().st_mtime
    except FileNotFoundError:
        return None


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


if __name__ == "__main__":
    sys.exit(main())
