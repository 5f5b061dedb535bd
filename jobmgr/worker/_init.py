"""The init that runs as PID 1 in each job's PID namespace.

A job's own command makes a poor PID 1: the kernel drops every signal PID 1 has no handler
for (so a plain ``sleep`` ignores SIGTERM), and nobody reaps orphaned grandchildren.  This init:

* sets up the namespaces (fresh /proc, loopback up) ahead of time, as a warm spare, then
  waits for the launcher's order and forks the job's command;
* forwards SIGTERM, SIGINT and SIGHUP to the job's main process;
* reaps every process that dies in the namespace, so no zombie is left;
* when the main process ends, reports its exact wait status to the launcher on the report
  pipe, then exits with the same code (128+N for signal N).  Exiting as PID 1 makes the kernel
  SIGKILL whatever is left in the namespace, daemons included: a job ends with its main process.

Signals are blocked and taken with sigwaitinfo(), so there is no handler racing the main loop.
It runs in a child forked from the single-threaded launcher and never returns to it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from typing import NoReturn

from ._namespaces import set_up_inside

FORWARDED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
WATCHED = FORWARDED | {signal.SIGCHLD}
# Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive exec, so restore them.
_RESET_TO_DEFAULT = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run(
    order_fd: int,
    stdio: tuple[int, int, int],
    exec_error_fd: int,
    report_fd: int,
) -> NoReturn:
    """Become a job's init: set up, say ``ready``, then wait for the job on ``order_fd``.

    The order is JSON ``{"argv", "env", "cwd", "uid", "gid"}`` written by the launcher, which
    then closes its end; an empty order (the launcher dropped this spare) means exit quietly.
    """
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        set_up_inside()
        os.write(report_fd, b"ready\n")
        order = _read_to_end(order_fd)
        os.close(order_fd)
        if not order:
            os._exit(0)
        job = json.loads(order)
        ids = (int(job["uid"]), int(job["gid"])) if job.get("uid") is not None else None
        main_pid = os.fork()
        if main_pid == 0:
            _exec_job(job["argv"], job["env"], job.get("cwd") or "/", ids, stdio, exec_error_fd)
    except BaseException as exc:  # nothing may escape into the launcher's code
        _fail(exec_error_fd, "setup", f"setting up the job's namespaces failed: {exc}")
    # Our copies of the pipes would keep readers from seeing EOF once the job ends.
    for fd in (*stdio, exec_error_fd):
        os.close(fd)
    _supervise(main_pid, report_fd)


def _read_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _supervise(main_pid: int, report_fd: int) -> NoReturn:
    while True:
        info = signal.sigwaitinfo(WATCHED)
        if info.si_signo != signal.SIGCHLD:
            _forward(main_pid, info.si_signo)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == main_pid:
                os.write(report_fd, b"exit %d\n" % status)
                os._exit(_exit_code(status))


def _forward(pid: int, signo: int) -> None:
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        pass  # it is exiting; the SIGCHLD is on its way


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _exec_job(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    ids: tuple[int, int] | None,
    stdio: tuple[int, int, int],
    exec_error_fd: int,
) -> NoReturn:
    stage = "setup"
    try:
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        # Everything else closes, except the exec-error pipe, which is close-on-exec.
        os.closerange(3, exec_error_fd)
        os.closerange(exec_error_fd + 1, os.sysconf("SC_OPEN_MAX"))
        for signo in _RESET_TO_DEFAULT:
            signal.signal(signo, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.setsid()
        stage = "cwd"
        os.chdir(cwd)
        if ids is not None:
            stage = "user"
            uid, gid = ids
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        stage = "exec"
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:
        _fail(exec_error_fd, stage, _describe(stage, argv[0], cwd, exc))


def _describe(stage: str, program: str, cwd: str, exc: BaseException) -> str:
    if stage == "exec":
        if isinstance(exc, FileNotFoundError):
            return f"command not found: {program!r}"
        if isinstance(exc, PermissionError):
            return f"permission denied: {program!r} is not executable"
        if isinstance(exc, OSError) and exc.errno == errno.ENOEXEC:
            return f"cannot execute {program!r}: it is not a program the kernel can run"
        return f"cannot execute {program!r}: {exc.strerror if isinstance(exc, OSError) else exc}"
    if stage == "cwd":
        return f"cannot change to working directory {cwd!r}: {exc}"
    if stage == "user":
        return f"cannot switch to the job's user: {exc}"
    return f"setting up the job failed: {exc}"


def _fail(fd: int, stage: str, message: str) -> NoReturn:
    try:
        os.write(fd, f"{stage}\t{message}".encode(errors="replace")[:4000])
    finally:
        os._exit(127)
