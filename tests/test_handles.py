"""Processes by handle and descriptors across the launcher's socket: pidfds name one process
for good, strays are reaped only when they are plainly no init, descriptors stay in step with
the frames that carry them, and a job's ending follows its init's report."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobmgr.worker import JobState, Limits
from jobmgr.worker._capture import LogWriter
from jobmgr.worker._fdpass import FdQueue, receive, send_all
from jobmgr.worker._pidfd import ProcessHandle
from jobmgr.worker._shim import InitExited, ProtocolError, StartRequest
from jobmgr.worker._slot import Job, Slot
from jobmgr.worker._stopping import OUTSIDE_STOP, job_result
from jobmgr.worker.cgroups import CgroupStats

# Run in a fresh interpreter: the test process has threads, and forking it would be unsafe.
STRAYS = textwrap.dedent(
    """
    import ctypes, os, time
    from jobmgr.worker._pidfd import ProcessHandle, reap_strays
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # a child subreaper, as the launcher is
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # a mid: a PID namespace of its own, its init forked, reported, and gone
        assert libc.unshare(0x20000000) == 0
        init = os.fork()
        if init == 0:
            os._exit(3)
        os.write(w, b"%d\\n" % init)
        os._exit(0)
    init = int(os.read(r, 64))
    os.waitid(os.P_PID, mid, os.WEXITED)
    stray = os.fork()
    if stray == 0:
        os._exit(0)
    time.sleep(0.5)  # the init (reparented here) and the stray are both zombies now
    reap_strays(known=set())
    assert os.waitid(os.P_PID, init, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    handle = ProcessHandle.of_child(init)  # the init's pid, as its report would give it
    handle.collect()
    assert handle.status == 3 << 8, handle.status
    reap_strays(known=set())
    try:
        os.waitid(os.P_PID, stray, os.WEXITED | os.WNOHANG)
        print("the stray was left")
    except ChildProcessError:
        print("ok")
    """
)


def test_a_stray_child_is_reaped_but_an_init_is_left_for_its_pidfd() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STRAYS], capture_output=True, text=True, timeout=30, cwd="/"
    )
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_a_pidfd_reaps_its_child_once_and_signals_nothing_after() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    handle = ProcessHandle.of_child(child.pid)
    try:
        assert handle.send(signal.SIGTERM)
        assert handle.wait(10)
        handle.collect()
        assert handle.ended and handle.status == signal.SIGTERM
        assert not handle.send(signal.SIGKILL)  # reaped: the number names nothing of ours
    finally:
        handle.close()


def test_descriptors_stay_in_step_with_the_frames_that_carry_them(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    files = [os.open(tmp_path / name, os.O_RDWR | os.O_CREAT) for name in ("a", "b", "c")]
    try:
        send_all(ours, b"frame-1", files[:2])
        send_all(ours, b"frame-2", [])
        send_all(ours, b"frame-3", files[2:])
        queue = FdQueue()
        received = b""
        while len(received) < 21:
            data, fds = receive(theirs, 1 << 16)
            received += data
            queue.add(fds)
        assert received == b"frame-1frame-2frame-3"
        first, third = queue.take(2), queue.take(1)
        for fd, original in zip(first + third, files, strict=True):
            assert os.fstat(fd).st_ino == os.fstat(original).st_ino
            os.close(fd)
        with pytest.raises(ProtocolError, match="fewer came"):
            queue.take(1)
    finally:
        for fd in files:
            os.close(fd)
        ours.close()
        theirs.close()


class _NoCgroup:
    name = "none"


def _ended_slot(report: InitExited | None, stop_reason: str, init_status: int | None) -> Slot:
    request = StartRequest(("true",), "", Limits(), {}, None, None, None, None, 2.0, 0)
    slot = Slot("s", 1, _NoCgroup(), Limits(), Path("/nonexistent"), None, {}, None, None)  # type: ignore[arg-type]
    slot.job = Job(request, 1, request.record("s", 0.0), stop_reason=stop_reason)
    slot.job.log = LogWriter(-1, 0, lambda _: None)
    slot.init = ProcessHandle(-1, 1)
    slot.init.status = init_status
    slot.exit_report = report
    return slot


STATS = CgroupStats(cpu_seconds=0.0, peak_memory_bytes=0, oom_killed=False)


@pytest.mark.parametrize(
    "report,stop_reason,init_status,state,code,signo,reason",
    [
        # The job exited 7 before the stop reached it: EXITED, whatever was asked.
        (InitExited(7 << 8), "stopped on request", None, JobState.EXITED, 7, None, ""),
        # The stop reached it and SIGTERM ended it.
        (InitExited(15, stopped=True), "stopped on request", None, JobState.STOPPED, None, 15,
         "stopped on request"),
        # Someone outside jobmgr sent the init its stop.
        (InitExited(15, stopped=True), "", None, JobState.STOPPED, None, 15, OUTSIDE_STOP),
        # The init was SIGKILLed after the grace, before it could report.
        (None, "timed out after 2.0s", 9, JobState.STOPPED, None, 9, "timed out after 2.0s"),
        # The init died without a word and nobody asked for a stop.
        (None, "", 9, JobState.FAILED, None, 9, ""),
    ],
)
def test_a_jobs_ending_is_the_one_its_init_reported(
    report: InitExited | None,
    stop_reason: str,
    init_status: int | None,
    state: JobState,
    code: int | None,
    signo: int | None,
    reason: str,
) -> None:
    result = job_result(_ended_slot(report, stop_reason, init_status), STATS)
    assert (result.state, result.exit_code, result.signal, result.reason) == (
        state,
        code,
        signo,
        reason,
    )
