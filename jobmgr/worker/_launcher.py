"""The launcher: one single-threaded process that starts, supervises and reaps every job.

Why a process of its own: the server runs grpcio's threads, and forking a threaded process to
run Python in the child is unsafe.  The launcher is exec'd once per worker, never starts a
thread, and forks per job, so a start pays no interpreter start-up.

Why it supervises too (as conmon and containerd-shim do): it holds the read ends of every
job's stdout and stderr and appends them to the job's output log, and it reaps every job's
init.  Output and exit status are therefore kept while the server is down, and a restarted
server reconnects and re-adopts the jobs still running.

Jobs start in warm slots.  A slot is a cgroup (created unlimited) and an init already
waiting in it: a short-lived "mid" child joins the cgroup, unshares the namespaces, forks the
init (PID 1 of the new PID namespace) and exits; the init sets up /proc and loopback, says
"ready" and waits for its order.  Warming is done ahead of time because joining a v1 cgroup
waits for an RCU grace period (about 20 ms here), which no start should pay.  A start takes a
ready slot, names the job after it, writes the job's limits into its cgroup and sends the
order; the init spawns the command and reports ``started`` (or the exec error), and only then
is the reply sent, so a start that returns has a running command.  The launcher is a child
subreaper, so every init is reparented to it.

Requests (see _protocol): start, stop, hello, shutdown.  Events: reply, output, exit.
"""

from __future__ import annotations

import argparse
import array
import errno
import fcntl
import heapq
import json
import os
import selectors
import shutil
import signal
import socket
import sys
import termios
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _pid1
from ._errors import WorkerError
from ._outputlog import FRAME, MAX_CHUNK, OVERHEAD, TRAILER, frame, valid_size
from ._protocol import Decoder, Message, encode
from ._spec import UNLIMITED, Limits
from ._status import JobState, Stream
from .cgroups import CgroupDriver, CgroupStats, JobCgroup, detect_driver

PR_SET_CHILD_SUBREAPER = 36
F_SETPIPE_SZ = 1031
SPLICE_MIN = 64 * 1024  # below this, read() + writev() costs less than three syscalls
SOCKET_NAME = "launcher.sock"
LOCK_NAME = "launcher.lock"
READY = b"ready\n"

Handler = Callable[[int], None]


@dataclass
class _Job:
    """A slot: a warm init waiting in its cgroup, and once given an order, the job in it."""

    id: str
    cgroup: JobCgroup
    pipes: dict[int, Stream]
    report_fd: int | None
    order_fd: int | None
    ready: bool = False
    assigned: bool = False
    dir: Path | None = None
    log_fd: int | None = None
    start_req: int | None = None
    started_at: float = 0.0
    size: int = 0
    report_buf: bytes = b""
    launched: bool = False
    launch_failed: bool = False
    init_pid: int | None = None
    init_status: int | None = None
    job_status: int | None = None
    stop_requested: bool = False
    reason: str = ""
    stop_reqs: list[int] = field(default_factory=list)
    truncated: bool = False
    output_cap: int = 0  # bytes of output kept at most; 0 for no cap
    kept: int = 0


class Launcher:
    def __init__(self, state_dir: Path, driver: CgroupDriver, spares: int) -> None:
        self._state = state_dir
        self._spares = spares
        self._warming_broken = False
        self._jobs_dir = state_dir / "jobs"
        self._driver = driver
        self._sel = selectors.DefaultSelector()
        self._jobs: dict[str, _Job] = {}
        self._by_pid: dict[int, _Job] = {}
        self._unclaimed: dict[int, int] = {}
        self._deadlines: list[tuple[float, str, str]] = []
        self._conn: socket.socket | None = None
        self._decoder = Decoder()
        self._outbox = bytearray()
        self._sizes_to_announce: dict[str, int] = {}
        self._shutdown_req: int | None = None
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        # Forked now, while this process is small: see _pid1.c for why slots come from it.
        self._zygote, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._zygote_pid = _pid1.start_zygote(zygote_end.fileno())
        zygote_end.close()

    # ---- the loop -------------------------------------------------------------------------

    def serve(self, listener: socket.socket) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._begin_shutdown(None, 0.0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self._sel.register(wake_r, selectors.EVENT_READ, lambda _: _drain(wake_r))
        self._sel.register(listener, selectors.EVENT_READ, lambda _: self._accept(listener))
        self._warm_up()
        while not (self._shutdown_req is not None and not self._jobs):
            for key, mask in self._sel.select(self._timeout()):
                self._guarded(key.data, mask)
            for step in (self._reap, self._fire_deadlines, self._announce_sizes, self._flush):
                self._guarded(step)
            self._guarded(self._warm_up)
        self._zygote.close()  # it exits when its socket closes
        if self._zygote_pid not in self._unclaimed:
            os.waitpid(self._zygote_pid, 0)
        self._send({"ev": "reply", "req": self._shutdown_req, "ok": True})
        self._driver.remove_parent()
        self._flush(blocking=True)

    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        """Run one step of the loop; an unexpected error is logged, never fatal, since every
        running job depends on this process staying up."""
        try:
            step(*args)
        except Exception:
            self._log("unexpected error, carrying on:\n" + traceback.format_exc())

    def _timeout(self) -> float | None:
        if not self._deadlines:
            return None
        return max(0.0, self._deadlines[0][0] - time.monotonic())

    # ---- the server connection -------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        if self._conn is not None:
            conn.sendall(encode({"ev": "busy"}))  # one server per state dir at a time
            conn.close()
            return
        conn.setblocking(False)
        self._conn = conn
        self._decoder = Decoder()
        self._outbox.clear()
        self._sel.register(conn, selectors.EVENT_READ, self._on_conn)

    def _on_conn(self, mask: int) -> None:
        assert self._conn is not None
        if mask & selectors.EVENT_WRITE:
            self._flush()
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = self._conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_conn()
            return
        for message in self._decoder.feed(data):
            self._dispatch(message)

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._sel.unregister(self._conn)
            self._conn.close()
            self._conn = None
            self._outbox.clear()

    def _send(self, message: Message) -> None:
        if self._conn is not None:
            self._outbox += encode(message)

    def _flush(self, blocking: bool = False) -> None:
        if self._conn is None:
            return
        if blocking:
            self._conn.setblocking(True)
        try:
            while self._outbox:
                sent = self._conn.send(self._outbox)
                del self._outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop_conn()
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outbox else 0)
        self._sel.modify(self._conn, events, self._on_conn)

    def _dispatch(self, message: Message) -> None:
        op, req = message.get("op"), message.get("req")
        try:
            if op == "start":
                self._start(message)
            elif op == "stop":
                self._stop(message["id"], float(message["grace"]), req)
            elif op == "hello":
                running = [{"id": j.id, "size": j.size} for j in self._jobs.values() if j.launched]
                running += [{"id": j, "size": 0} for j in self._launching()]
                self._send({"ev": "reply", "req": req, "ok": True, "running": running})
            elif op == "shutdown":
                self._begin_shutdown(req, float(message.get("grace", 5.0)))
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # a bad request must not take every job down with it
            self._send({"ev": "reply", "req": req, "ok": False, "error": str(exc)})

    # ---- starting ---------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """Keep ``spares`` slots warming or ready, so a start finds its namespaces made."""
        if self._shutdown_req is not None or self._warming_broken or self._launching():
            return  # forking a spare now would delay the reply of the start under way
        idle = sum(1 for job in self._jobs.values() if not job.assigned)
        for _ in range(self._spares - idle):
            self._new_slot()

    def _new_slot(self) -> _Job:
        slot_id = str(uuid.uuid4())
        cgroup = self._driver.create(slot_id, UNLIMITED)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        report_r, report_w = os.pipe()
        order_r, order_w = os.pipe()
        for fd in (out_w, err_w):
            fcntl.fcntl(fd, F_SETPIPE_SZ, MAX_CHUNK)
        procs = b"\0".join(os.fsencode(path) for path in cgroup.procs_files)
        socket.send_fds(self._zygote, [procs], [self._devnull, out_w, err_w, order_r, report_w])
        for fd in (out_w, err_w, report_w, order_r):
            os.close(fd)
        job = _Job(
            id=slot_id,
            cgroup=cgroup,
            pipes={out_r: Stream.STDOUT, err_r: Stream.STDERR},
            report_fd=report_r,
            order_fd=order_w,
        )
        self._jobs[slot_id] = job
        for fd in (out_r, err_r, report_r):
            os.set_blocking(fd, False)
        for fd in job.pipes:
            self._sel.register(fd, selectors.EVENT_READ, self._pipe_handler(job, fd))
        self._sel.register(report_r, selectors.EVENT_READ, lambda _: self._on_report(job))
        return job

    def _take_slot(self) -> _Job:
        idle = [job for job in self._jobs.values() if not job.assigned]
        ready = [job for job in idle if job.ready]
        return (ready or idle or [self._new_slot()])[0]

    def _launching(self) -> list[str]:
        return [j.id for j in self._jobs.values() if j.assigned and not j.launched]

    def _start(self, req: Message) -> None:
        limits = Limits(**req["limits"])
        job = self._take_slot()
        job.assigned = True
        job.start_req = req.get("req")
        job.output_cap = int(req.get("output_cap") or 0)
        try:
            job.cgroup.set_limits(limits)
            job.started_at = time.time()
            job.dir = self._jobs_dir / job.id
            job.dir.mkdir(mode=0o700)
            record = {k: req.get(k) for k in ("argv", "owner", "limits", "env", "cwd")}
            _write_json(
                job.dir / "job.json", {**record, "id": job.id, "started_at": job.started_at}
            )
            job.log_fd = os.open(
                # Not O_APPEND: splice() refuses it. This process is the only writer.
                job.dir / "output.log",
                os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
        except BaseException:
            job.launch_failed = True
            self._discard(job)
            raise
        assert job.order_fd is not None
        try:
            _write_all(job.order_fd, _encode_order(req))
        except OSError:
            pass  # the init died while warming; its exit reports the failure
        os.close(job.order_fd)
        job.order_fd = None
        timeout = req.get("timeout")
        if timeout:
            self._add_deadline(time.monotonic() + float(timeout), "timeout", job.id)

    def _discard(self, job: _Job) -> None:
        """Give up a slot: closing its order pipe makes a waiting init exit."""
        if job.order_fd is not None:
            os.close(job.order_fd)
            job.order_fd = None

    def _on_launched(self, job: _Job, error: str) -> None:
        """The init spawned the command (``error`` empty) or could not."""
        if not job.assigned:
            # A slot that cannot even warm up would fail every start: stop making them
            # until a start (which then reports this error) succeeds again.
            self._log(f"warming a job slot failed: {error}")
            self._warming_broken = True
        elif error:
            job.launch_failed = True
            stage, _, message = error.partition(" ")
            self._send(
                {"ev": "reply", "req": job.start_req, "ok": False, "error": message, "stage": stage}
            )
        else:
            job.launched = True
            self._warming_broken = False
            self._send(
                {
                    "ev": "reply",
                    "req": job.start_req,
                    "ok": True,
                    "id": job.id,
                    "started_at": job.started_at,
                }
            )

    def _on_report(self, job: _Job) -> None:
        assert job.report_fd is not None
        data = _read(job.report_fd)
        if not data:
            self._close_fd(job, job.report_fd)
            job.report_fd = None
            self._maybe_finish(job)
            return
        job.report_buf += data
        *lines, job.report_buf = job.report_buf.split(b"\n")
        for line in lines:
            kind, _, value = line.partition(b" ")
            if kind == b"pid":
                job.init_pid = int(value)
                self._by_pid[job.init_pid] = job
                if job.init_pid in self._unclaimed:
                    job.init_status = self._unclaimed.pop(job.init_pid)
            elif kind == b"ready":
                job.ready = True
            elif kind == b"started":
                self._on_launched(job, "")
            elif kind == b"error":
                self._on_launched(job, value.decode(errors="replace"))
            elif kind == b"exit":
                job.job_status = int(value)
        self._maybe_finish(job)

    # ---- output -----------------------------------------------------------------------------

    def _pipe_handler(self, job: _Job, fd: int) -> Handler:
        return lambda _: self._on_pipe(job, fd)

    def _on_pipe(self, job: _Job, fd: int) -> None:
        pending = min(_pending_bytes(fd), MAX_CHUNK)
        within_cap = not job.output_cap or job.kept + pending <= job.output_cap
        if pending >= SPLICE_MIN and job.log_fd is not None and not job.truncated and within_cap:
            self._splice(job, fd, pending)
            return
        data = _read(fd, MAX_CHUNK)
        if data is None:
            return
        if not data:
            self._close_fd(job, fd)
            del job.pipes[fd]
            self._maybe_finish(job)
            return
        self._append(job, job.pipes[fd], data)

    def _splice(self, job: _Job, fd: int, length: int) -> None:
        """Append ``length`` bytes waiting in the pipe as one frame, without copying them
        through this process: at high rates this doubles what the launcher can take."""
        assert job.log_fd is not None
        header = FRAME.pack(job.pipes[fd], length)
        trailer = TRAILER.pack(length)
        try:
            ok = os.write(job.log_fd, header) == len(header)
            ok = ok and os.splice(fd, job.log_fd, length) == length
            ok = ok and os.write(job.log_fd, trailer) == len(trailer)
        except OSError as exc:
            self._cut_back(job, f"writing output failed: {exc.strerror}")
            return
        if not ok:
            self._cut_back(job, "writing output failed: disk full")
            return
        self._commit(job, length)

    def _append(self, job: _Job, stream: Stream, data: bytes) -> None:
        if job.truncated or job.log_fd is None:
            return  # past the cap or a write failure nothing is kept, but the pipe is drained
        room = job.output_cap - job.kept if job.output_cap else len(data)
        if room < len(data):
            data = data[: max(room, 0)]
            self._truncate(job, f"the output cap of {job.output_cap} bytes was reached")
            if not data:
                return
        pieces = frame(stream, data)
        try:
            written = os.writev(job.log_fd, pieces)
        except OSError as exc:
            self._cut_back(job, f"writing output failed: {exc.strerror}")
            return
        if written != sum(len(piece) for piece in pieces):
            self._cut_back(job, "writing output failed: disk full")
            return
        self._commit(job, len(data))

    def _commit(self, job: _Job, length: int) -> None:
        job.size += OVERHEAD + length
        job.kept += length
        self._sizes_to_announce[job.id] = job.size

    def _cut_back(self, job: _Job, reason: str) -> None:
        """A partial frame would corrupt every read after it: cut the file back to whole
        frames and keep nothing more of this job's output."""
        assert job.log_fd is not None
        os.ftruncate(job.log_fd, job.size)
        os.lseek(job.log_fd, job.size, os.SEEK_SET)
        self._truncate(job, reason)

    def _truncate(self, job: _Job, reason: str) -> None:
        if not job.truncated:
            job.truncated = True
            self._log(f"job {job.id}: output truncated at byte {job.kept}: {reason}")
            self._send({"ev": "truncated", "id": job.id, "reason": reason})

    def _announce_sizes(self) -> None:
        # Held back until the start reply is out: the server learns of a job from the reply.
        pending = {}
        for job_id, size in self._sizes_to_announce.items():
            job = self._jobs.get(job_id)
            if job is not None and not job.launched and not job.launch_failed:
                pending[job_id] = size
            else:
                self._send({"ev": "output", "id": job_id, "size": size})
        self._sizes_to_announce = pending

    # ---- stopping ---------------------------------------------------------------------------

    def _stop(self, job_id: str, grace: float, req: int | None) -> None:
        job = self._jobs.get(job_id)
        if job is None or not job.launched:
            # Finished already (or never launched): the server has its record.
            self._send({"ev": "reply", "req": req, "ok": True, "finished": True})
            return
        if req is not None:
            job.stop_reqs.append(req)
        self._request_stop(job, grace, "stopped on request")

    def _request_stop(self, job: _Job, grace: float, reason: str) -> None:
        if not job.stop_requested:
            job.stop_requested = True
            job.reason = reason
            self._signal_all(job, signal.SIGTERM)
        self._add_deadline(time.monotonic() + grace, "kill", job.id)

    def _signal_all(self, job: _Job, signo: int) -> None:
        """Signal every process of the job but its init, which dies with its main process."""
        for pid in job.cgroup.pids():
            if pid != job.init_pid:
                try:
                    os.kill(pid, signo)
                except ProcessLookupError:
                    pass

    def _kill(self, job: _Job) -> None:
        # SIGKILL to PID 1 of a namespace takes every process in it along.
        if job.init_pid is not None and job.init_status is None:
            try:
                os.kill(job.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        job.cgroup.kill_all()

    def _begin_shutdown(self, req: int | None, grace: float) -> None:
        self._shutdown_req = req if req is not None else -1
        for job in list(self._jobs.values()):
            if job.launched:
                self._request_stop(job, grace, "stopped at server shutdown")
            elif not job.assigned:
                self._discard(job)

    def _add_deadline(self, when: float, kind: str, job_id: str) -> None:
        heapq.heappush(self._deadlines, (when, kind, job_id))

    def _fire_deadlines(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, kind, job_id = heapq.heappop(self._deadlines)
            job = self._jobs.get(job_id)
            if job is None:
                continue
            if kind == "kill":
                self._kill(job)
            elif kind == "timeout" and not job.stop_requested:
                limit = job.started_at
                self._request_stop(job, 5.0, f"timed out after {time.time() - limit:.1f}s")

    # ---- reaping and finishing ---------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self._by_pid.pop(pid, None)
            if job is None:
                # An init reaped before its "pid" line was read (claimed in _on_report), or
                # the zygote.
                self._unclaimed[pid] = status
            else:
                job.init_status = status
                self._maybe_finish(job)

    def _maybe_finish(self, job: _Job) -> None:
        if job.pipes or job.report_fd is not None:
            return
        if job.init_pid is not None and job.init_status is None:
            return  # its report pipe closed as it died: the reaping is on its way
        self._finish(job)

    def _finish(self, job: _Job) -> None:
        del self._jobs[job.id]
        self._discard(job)
        if job.log_fd is not None:
            os.close(job.log_fd)
        try:
            stats = job.cgroup.stats()
        except (OSError, WorkerError) as exc:
            self._log(f"job {job.id}: no usage figures: {exc}")
            stats = CgroupStats(cpu_seconds=0.0, peak_memory_bytes=0, oom_killed=False)
        try:
            job.cgroup.destroy()
        except (OSError, WorkerError) as exc:  # retried at the next launcher start
            self._log(f"job {job.id}: its cgroup could not be removed: {exc}")
        if not job.launched:
            if job.dir is not None:
                shutil.rmtree(job.dir, ignore_errors=True)
            if job.assigned and not job.launch_failed:
                # It died before exec without saying why (killed while warming).
                self._send(
                    {
                        "ev": "reply",
                        "req": job.start_req,
                        "ok": False,
                        "error": "the job's init died",
                    }
                )
            return
        assert job.dir is not None
        status = job.job_status if job.job_status is not None else job.init_status
        assert status is not None  # a launched job had an init, and it has been reaped
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        signo = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if job.stop_requested:
            state = JobState.STOPPED
        elif exit_code is not None:
            state = JobState.EXITED
        else:
            state = JobState.FAILED
        reason = job.reason
        if stats.oom_killed and not reason:
            reason = "the memory limit was exceeded and the OOM killer fired"
        result = {
            "state": state.value,
            "exit_code": exit_code,
            "signal": signo,
            "oom_killed": stats.oom_killed,
            "ended_at": time.time(),
            "cpu_seconds": stats.cpu_seconds,
            "peak_memory_bytes": stats.peak_memory_bytes,
            "output_size": job.size,
            "output_truncated": job.truncated,
            "reason": reason,
        }
        try:
            _write_json(job.dir / "result.json", result)
        except OSError as exc:  # a full disk: the connected server still gets the result
            self._log(f"job {job.id}: could not record its result: {exc}")
        self._announce_sizes()
        self._send({"ev": "exit", "id": job.id, "result": result})
        for req in job.stop_reqs:
            self._send({"ev": "reply", "req": req, "ok": True})

    def _close_fd(self, job: _Job, fd: int) -> None:
        self._sel.unregister(fd)
        os.close(fd)

    def _log(self, message: str) -> None:
        print(f"jobmgr-launcher: {message}", file=sys.stderr, flush=True)

    # ---- recovery ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Mark jobs whose previous launcher died as LOST and clear what is left of them."""
        self._jobs_dir.mkdir(mode=0o700, exist_ok=True)
        for job_dir in self._jobs_dir.iterdir():
            if (job_dir / "result.json").exists():
                continue
            if not (job_dir / "job.json").exists():
                shutil.rmtree(job_dir, ignore_errors=True)
                continue
            size = _valid_log_size(job_dir / "output.log")
            result = {
                "state": JobState.LOST.value,
                "exit_code": None,
                "signal": None,
                "oom_killed": False,
                "ended_at": time.time(),
                "cpu_seconds": 0.0,
                "peak_memory_bytes": 0,
                "output_size": size,
                "output_truncated": False,
                "reason": "its supervisor (the launcher) died; what was left of it was killed",
            }
            _write_json(job_dir / "result.json", result)
        for name in self._driver.existing():
            self._driver.open(name).destroy()


def _encode_order(req: Message) -> bytes:
    """The order the init reads (see _pid1.c): NUL-terminated uid gid cwd argc argv envc env.

    Strings carrying surrogate escapes become the exact bytes they stand for.
    """
    argv: list[str] = req["argv"]
    env = [f"{key}={value}" for key, value in req["env"].items()]
    uid, gid = req.get("uid"), req.get("gid")
    fields = [
        "" if uid is None else str(uid),
        "" if gid is None else str(gid),
        req.get("cwd") or "/",
        str(len(argv)),
        *argv,
        str(len(env)),
        *env,
    ]
    return b"".join(os.fsencode(item) + b"\0" for item in fields)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pending_bytes(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]


def _read(fd: int, size: int = 65536) -> bytes | None:
    """What the pipe holds, b"" at EOF, None if nothing is there yet."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINTR:
            return None
        raise


def _drain(fd: int) -> None:
    while _read(fd):
        pass


def _write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: a crash leaves the old file or the new, never half of one."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def _valid_log_size(path: Path) -> int:
    """Cut a log back to its whole frames (a crash may leave half of one); its new size."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = valid_size(fd)
        os.ftruncate(fd, size)
        return size
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobmgr-launcher", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--cgroup-parent", required=True)
    parser.add_argument("--warm-slots", type=int, default=4)
    args = parser.parse_args(argv)
    state: Path = args.state_dir
    lock_fd = os.open(state / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another launcher is running for {state}", file=sys.stderr)
        return 3
    libc_prctl(PR_SET_CHILD_SUBREAPER, 1)
    launcher = Launcher(state, detect_driver(args.cgroup_parent), args.warm_slots)
    launcher.recover()
    path = state / SOCKET_NAME
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(8)
    (state / "launcher.pid").write_text(f"{os.getpid()}\n")
    os.write(1, READY)
    os.dup2(launcher._devnull, 1)
    launcher.serve(listener)
    path.unlink(missing_ok=True)
    (state / "launcher.pid").unlink(missing_ok=True)
    return 0


def libc_prctl(option: int, value: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


if __name__ == "__main__":
    sys.exit(main())
