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
import contextlib
import errno
import fcntl
import heapq
import os
import resource
import selectors
import shutil
import signal
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._capture import LogWriter, read_some
from ._channel import ServerChannel
from ._errors import WorkerError
from ._outputlog import MAX_CHUNK
from ._protocol import Message
from ._records import log_path, mark_lost, record_frame, write_result
from ._slot import Slot, encode_order
from ._spec import UNLIMITED, Limits
from ._status import JobState, Stream
from .cgroups import CgroupDriver, CgroupStats, detect_driver

PR_SET_CHILD_SUBREAPER = 36
F_SETPIPE_SZ = 1031
SOCKET_NAME = "launcher.sock"
LOCK_NAME = "launcher.lock"
READY = b"ready\n"
ZYGOTE = Path(__file__).with_name("_pid1")  # built from _pid1.c by setup.py


class StartRefused(Exception):
    """A start the launcher turns down; ``stage`` tells the worker which error to raise."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


Handler = Callable[[int], None]


class Launcher:
    def __init__(self, state_dir: Path, driver: CgroupDriver, spares: int) -> None:
        self._state = state_dir
        self._spares = spares
        self._warming_broken = False
        self._jobs_dir = state_dir / "jobs"
        # A slot's log is made as it warms, here, and moved into jobs/ with its record written:
        # a start then creates no file, and jobs/ holds only logs that have a record.
        self._spares_dir = state_dir / "spares"
        shutil.rmtree(self._spares_dir, ignore_errors=True)  # a dead launcher's
        self._spares_dir.mkdir(mode=0o700)
        self.driver = driver
        self._sel = selectors.DefaultSelector()
        self._jobs: dict[str, Slot] = {}
        self._by_pid: dict[int, Slot] = {}
        self._unclaimed: dict[int, int] = {}
        self._deadlines: list[tuple[float, str, str]] = []
        self._sizes_to_announce: dict[str, int] = {}
        self._shutdown_req: int | None = None
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._zygote, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._zygote_pid = _spawn_zygote(zygote_end)
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
        self._channel = ServerChannel(self._sel, listener, self._dispatch)
        self._warm_up()
        after_events = (
            self._reap,
            self._fire_deadlines,
            self._announce_sizes,
            self._channel.flush,
            self._warm_up,
        )
        while not (self._shutdown_req is not None and not self._jobs):
            for key, mask in self._sel.select(self._timeout()):
                self._guarded(key.data, mask)
            for step in after_events:
                self._guarded(step)
        self._zygote.close()  # it exits when its socket closes
        if self._zygote_pid not in self._unclaimed:
            os.waitpid(self._zygote_pid, 0)
        self._channel.send({"ev": "reply", "req": self._shutdown_req, "ok": True})
        self.driver.remove_parent()
        self._channel.flush(blocking=True)

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

    # ---- requests --------------------------------------------------------------------------

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
                self._channel.send({"ev": "reply", "req": req, "ok": True, "running": running})
            elif op == "shutdown":
                self._begin_shutdown(req, float(message.get("grace", 5.0)))
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # a bad request must not take every job down with it
            reply = {"ev": "reply", "req": req, "ok": False, "error": str(exc) or repr(exc)}
            if isinstance(exc, StartRefused):
                reply["stage"] = exc.stage
            else:
                self._log(f"request {op!r} failed:\n" + traceback.format_exc())
            self._channel.send(reply)

    # ---- starting ---------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """Keep ``spares`` slots warming or ready, so a start finds its namespaces made."""
        if self._shutdown_req is not None or self._warming_broken:
            return
        idle = sum(1 for job in self._jobs.values() if not job.assigned)
        try:
            for _ in range(self._spares - idle):
                self._new_slot()
        except StartRefused:
            pass  # the disk is full: a start will say so

    def _new_slot(self) -> Slot:
        slot_id = str(uuid.uuid4())
        path = self._spares_dir / slot_id
        # Whatever is made before a failure (out of fds, say) is undone: each failed warm-up
        # would otherwise keep a file, a cgroup and up to eight fds.
        with contextlib.ExitStack() as undo, _refused_if_exhausted():
            log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            undo.callback(path.unlink, missing_ok=True)
            undo.callback(os.close, log_fd)
            cgroup = self.driver.create(slot_id, UNLIMITED)
            undo.callback(cgroup.destroy)
            out_r, out_w = _pipe(undo)
            err_r, err_w = _pipe(undo)
            report_r, report_w = _pipe(undo)
            order_r, order_w = _pipe(undo)
            for fd in (out_w, err_w):
                fcntl.fcntl(fd, F_SETPIPE_SZ, MAX_CHUNK)
            procs = b"\0".join(os.fsencode(path) for path in cgroup.procs_files)
            fds = [self._devnull, out_w, err_w, order_r, report_w]
            socket.send_fds(self._zygote, [procs], fds)
            undo.pop_all()
        for fd in (out_w, err_w, report_w, order_r):
            os.close(fd)
        job = Slot(
            id=slot_id,
            cgroup=cgroup,
            pipes={out_r: Stream.STDOUT, err_r: Stream.STDERR},
            report_fd=report_r,
            order_fd=order_w,
            path=path,
            log_fd=log_fd,
        )
        self._jobs[slot_id] = job
        for fd in (out_r, err_r, report_r):
            os.set_blocking(fd, False)
        for fd in job.pipes:
            self._sel.register(fd, selectors.EVENT_READ, self._pipe_handler(job, fd))
        self._sel.register(report_r, selectors.EVENT_READ, lambda _: self._on_report(job))
        return job

    def _take_slot(self) -> Slot:
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
        try:
            self._prepare(job, req, limits)
        except BaseException:
            job.launch_failed = True
            self._discard(job)
            raise
        assert job.order_fd is not None
        try:
            _write_all(job.order_fd, encode_order(req))
        except OSError:
            pass  # the init died while warming; its exit reports the failure
        os.close(job.order_fd)
        job.order_fd = None
        timeout = req.get("timeout")
        if timeout:
            self._add_deadline(time.monotonic() + float(timeout), "timeout", job.id)

    def _prepare(self, job: Slot, req: Message, limits: Limits) -> None:
        """Limit the slot's cgroup, and make its file the job's log, record first."""
        try:
            job.cgroup.set_limits(limits)
        except WorkerError as exc:
            raise StartRefused("limits", f"the kernel refused the job's limits: {exc}") from exc
        assert job.path is not None and job.log_fd is not None
        job.started_at = time.time()
        record = {k: req.get(k) for k in ("argv", "owner", "limits", "env", "cwd")}
        job.record = {**record, "id": job.id, "started_at": job.started_at}
        header = record_frame(job.record)
        try:
            if os.write(job.log_fd, header) != len(header):
                raise OSError(errno.ENOSPC, "No space left on device")
            path = log_path(self._jobs_dir, job.id)
            os.rename(job.path, path)
            job.path = path
        except OSError as exc:
            _refuse_if_full(exc)
            raise
        cap = int(req.get("output_cap") or 0)
        # No O_APPEND needed: this process is the file's only writer.
        job.log = LogWriter(job.log_fd, cap, lambda reason: self._truncated(job, reason))
        job.log_fd = None
        job.log.size = len(header)
        job.grace = float(req.get("grace") or 5.0)

    def _discard(self, job: Slot) -> None:
        """Give up a slot: closing its order pipe makes a waiting init exit."""
        if job.order_fd is not None:
            os.close(job.order_fd)
            job.order_fd = None

    def _on_launched(self, job: Slot, error: str) -> None:
        """The init spawned the command (``error`` empty) or could not."""
        if not job.assigned:
            # A slot that cannot even warm up would fail every start: stop making them
            # until a start (which then reports this error) succeeds again.
            self._log(f"warming a job slot failed: {error}")
            self._warming_broken = True
        elif error:
            job.launch_failed = True
            stage, _, message = error.partition(" ")
            self._channel.send(
                {"ev": "reply", "req": job.start_req, "ok": False, "error": message, "stage": stage}
            )
        else:
            job.launched = True
            self._warming_broken = False
            self._channel.send(
                {
                    "ev": "reply",
                    "req": job.start_req,
                    "ok": True,
                    "id": job.id,
                    "started_at": job.started_at,
                }
            )

    def _on_report(self, job: Slot) -> None:
        assert job.report_fd is not None
        data = read_some(job.report_fd)
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

    def _pipe_handler(self, job: Slot, fd: int) -> Handler:
        return lambda _: self._on_pipe(job, fd)

    def _on_pipe(self, job: Slot, fd: int) -> None:
        try:
            if job.log is not None:
                more = job.log.take(fd, job.pipes[fd])
            else:  # a spare: its init never writes there, so this is EOF
                more = False if read_some(fd) == b"" else None
        except Exception as exc:
            # The pipe stays readable, so carrying on would spin this loop on the same error
            # (and fill launcher.log). Give the pipe up: the job's next write to it fails.
            self._log(f"job {job.id}: reading its output failed:\n{traceback.format_exc()}")
            if job.log is not None:
                job.log.give_up(f"reading the job's output failed: {exc}")
            more = False
        if more is False:
            self._close_fd(job, fd)
            del job.pipes[fd]
            self._maybe_finish(job)
        elif more:
            self._sizes_to_announce[job.id] = job.size

    def _truncated(self, job: Slot, reason: str) -> None:
        self._log(f"job {job.id}: output truncated: {reason}")
        self._channel.send({"ev": "truncated", "id": job.id, "reason": reason})

    def _announce_sizes(self) -> None:
        # Held back until the start reply is out: the server learns of a job from the reply.
        pending = {}
        for job_id, size in self._sizes_to_announce.items():
            job = self._jobs.get(job_id)
            if job is not None and not job.launched and not job.launch_failed:
                pending[job_id] = size
            else:
                self._channel.send({"ev": "output", "id": job_id, "size": size})
        self._sizes_to_announce = pending

    # ---- stopping ---------------------------------------------------------------------------

    def _stop(self, job_id: str, grace: float, req: int | None) -> None:
        job = self._jobs.get(job_id)
        if job is None or not job.launched:
            # Finished already (or never launched): the server has its record.
            self._channel.send({"ev": "reply", "req": req, "ok": True, "finished": True})
            return
        if req is not None:
            job.stop_reqs.append(req)
        self._request_stop(job, grace, "stopped on request")

    def _request_stop(self, job: Slot, grace: float, reason: str) -> None:
        if not job.stop_requested:
            job.stop_requested = True
            job.reason = reason
            if grace > 0:  # no grace means SIGKILL only: a SIGTERM first could end it instead
                self._signal_all(job, signal.SIGTERM)
        self._add_deadline(time.monotonic() + grace, "kill", job.id)

    def _signal_all(self, job: Slot, signo: int) -> None:
        """Signal every process of the job but its init, which dies with its main process."""
        for pid in job.cgroup.pids():
            if pid != job.init_pid:
                try:
                    os.kill(pid, signo)
                except ProcessLookupError:
                    pass

    def _kill(self, job: Slot) -> None:
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
                self._request_stop(job, job.grace, f"timed out after {time.time() - limit:.1f}s")

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

    def _maybe_finish(self, job: Slot) -> None:
        if job.pipes or job.report_fd is not None:
            return
        if job.init_pid is not None and job.init_status is None:
            return  # its report pipe closed as it died: the reaping is on its way
        self._finish(job)

    def _finish(self, job: Slot) -> None:
        del self._jobs[job.id]
        self._discard(job)
        if job.log is not None:
            os.close(job.log.fd)
        elif job.log_fd is not None:
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
            if job.path is not None:
                job.path.unlink(missing_ok=True)
            if job.assigned and not job.launch_failed:
                # It died before exec without saying why (killed while warming).
                self._channel.send(
                    {
                        "ev": "reply",
                        "req": job.start_req,
                        "ok": False,
                        "error": "the job's init died",
                    }
                )
            return
        assert job.path is not None
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
            "output_truncated": job.log is not None and job.log.truncated,
            "reason": reason,
        }
        try:
            write_result(job.path, job.record, result)
        except OSError as exc:  # a full disk: the connected server still gets the result
            self._log(f"job {job.id}: could not record its result: {exc}")
        self._announce_sizes()
        self._channel.send({"ev": "exit", "id": job.id, "result": result})
        for req in job.stop_reqs:
            self._channel.send({"ev": "reply", "req": req, "ok": True})

    def _close_fd(self, job: Slot, fd: int) -> None:
        self._sel.unregister(fd)
        os.close(fd)

    def _log(self, message: str) -> None:
        print(f"jobmgr-launcher: {message}", file=sys.stderr, flush=True)


def _pipe(undo: contextlib.ExitStack) -> tuple[int, int]:
    """A new pipe whose ends ``undo`` closes."""
    read_end, write_end = os.pipe()
    undo.callback(os.close, read_end)
    undo.callback(os.close, write_end)
    return read_end, write_end


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _refuse_if_full(exc: OSError) -> None:
    """A write or create in the state dir failed: if the disk is full, refuse the start."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StartRefused("space", f"the server's state directory is full: {exc}") from exc


@contextlib.contextmanager
def _refused_if_exhausted() -> Iterator[None]:
    """A full disk or no file descriptors left: refuse the start, saying which."""
    try:
        yield
    except OSError as exc:
        _refuse_if_full(exc)
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            # Stage "space" (no room for a job: CapacityError) is the name the worker knows.
            message = f"the server has no file descriptors left for a new job: {exc}"
            raise StartRefused("space", message) from exc
        raise


def _spawn_zygote(sock: socket.socket) -> int:
    """Run the zygote program that forks every slot (see _pid1.c), on its end of ``sock``."""
    if not os.access(ZYGOTE, os.X_OK):
        raise WorkerError(f"{ZYGOTE} is missing or not executable: reinstall jobmgr")
    sock.set_inheritable(True)
    return os.posix_spawn(ZYGOTE, [str(ZYGOTE), str(sock.fileno())], {})


def _drain(fd: int) -> None:
    while read_some(fd):
        pass


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
    # Each running job holds a few fds here (its pipes, its log); a soft limit of 1024 would
    # cap a server at about 250 jobs.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    launcher = Launcher(state, detect_driver(args.cgroup_parent), args.warm_slots)
    mark_lost(state / "jobs", launcher.driver)
    path = state / SOCKET_NAME
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(8)
    pid_fd = os.open(state / "launcher.pid", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(pid_fd, f"{os.getpid()}\n".encode())
    os.close(pid_fd)
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
