"""The init that runs as PID 1 in each job's PID namespace.

A job's own command makes a poor PID 1: the kernel drops every signal PID 1 has no handler
for (so a plain ``sleep`` ignores SIGTERM), and nobody reaps orphaned grandchildren.  This init:

* sets up the namespaces (fresh /proc, loopback up) ahead of time, as a warm spare, says
  ``ready`` and waits for the launcher's order;
* switches to the job's user and working directory and spawns the command with
  posix_spawn (vfork-fast, and exec errors come back as exceptions, not as a dead child);
* forwards SIGTERM, SIGINT and SIGHUP to the job's main process;
* reaps every process that dies in the namespace, so no zombie is left;
* when the main process ends, reports its exact wait status, then exits with the same code
  (128+N for signal N).  PID 1 exiting makes the kernel SIGKILL whatever is left in the
  namespace, daemons included: a job ends with its main process.

Signals are blocked and taken with sigwaitinfo(), so there is no handler racing the main loop.
Everything it tells the launcher goes as one line on the report pipe: ``ready``, ``started``,
``error <stage> <message>`` or ``exit <wait status>``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from typing import Any, NoReturn

from ._namespaces import set_up_inside

FORWARDED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
WATCHED = FORWARDED | {signal.SIGCHLD}
# Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive exec, so restore them.
_RESET_TO_DEFAULT = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _LaunchFailure(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def run(order_fd: int, stdio: tuple[int, int, int], report_fd: int) -> NoReturn:
    """Become a job's init: set up, say ``ready``, then wait for the job on ``order_fd``.

    The order is JSON ``{"argv", "env", "cwd", "uid", "gid"}`` written by the launcher, which
    then closes its end; an empty order (the launcher dropped this spare) means exit quietly.
    """
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        set_up_inside()
        _report(report_fd, "ready")
        order = _read_to_end(order_fd)
        os.close(order_fd)
        if not order:
            os._exit(0)
        main_pid = _spawn(json.loads(order), stdio)
    except _LaunchFailure as failure:
        _fail(report_fd, failure.stage, str(failure))
    except BaseException as exc:  # nothing may escape into the launcher's code
        _fail(report_fd, "setup", f"setting up the job failed: {exc}")
    for fd in stdio:  # our copies would keep the launcher from seeing EOF when the job ends
        os.close(fd)
    _report(report_fd, "started")
    _supervise(main_pid, report_fd)


def _spawn(job: dict[str, Any], stdio: tuple[int, int, int]) -> int:
    argv: list[str] = job["argv"]
    env: dict[str, str] = job["env"]
    cwd: str = job.get("cwd") or "/"
    if job.get("uid") is not None:
        try:
            os.setgroups([])
            os.setgid(int(job["gid"]))
            os.setuid(int(job["uid"]))
        except OSError as exc:
            raise _LaunchFailure("user", f"cannot switch to the job's user: {exc}") from exc
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise _LaunchFailure(
            "cwd", f"cannot change to working directory {cwd!r}: {exc.strerror}"
        ) from exc
    # posix_spawnp looks argv[0] up in the caller's PATH: make ours the job's.
    os.environ["PATH"] = env.get("PATH", os.defpath)
    try:
        return os.posix_spawnp(
            argv[0],
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)],
            setsid=True,
            setsigmask=(),
            setsigdef=_RESET_TO_DEFAULT,
        )
    except OSError as exc:
        raise _LaunchFailure("exec", _exec_error(argv[0], exc)) from exc


def _exec_error(program: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"command not found: {program!r}"
    if exc.errno == errno.EACCES:
        return f"permission denied: {program!r} is not executable"
    if exc.errno == errno.ENOEXEC:
        return f"cannot execute {program!r}: it is not a program the kernel can run"
    return f"cannot execute {program!r}: {exc.strerror}"


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
                _report(report_fd, f"exit {status}")
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


def _read_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _report(fd: int, line: str) -> None:
    os.write(fd, line.replace("\n", " ").encode(errors="replace")[:4000] + b"\n")


def _fail(fd: int, stage: str, message: str) -> NoReturn:
    try:
        _report(fd, f"error {stage} {message}")
    finally:
        os._exit(127)
