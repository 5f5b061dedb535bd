"""The server keeps its launcher alive: it notices a launcher that died or froze, and starts
another, which takes over what is left.

A watchdog thread pings the launcher every PING_EVERY seconds. The launcher's death shows at
once (its connection ends and its pidfd becomes readable). A launcher that has left a ping
unanswered for UNANSWERED_AFTER seconds and is stopped (SIGSTOP, or a tracer) is frozen: it is
unavailable (health says NOT_SERVING) and killed at once, through its pidfd. One that runs but
does not answer is only busy at first (200 clients on 2 cores keep it 3 s from a ping):
requests wait for it, until BUSY_AFTER makes it unavailable and HUNG_AFTER has it killed.
Either way a new launcher is started and
handed copies of every running job's handles, which the keeper holds (see JobHandles): it
takes those jobs over, output and all (see _adopt), and finishes any other as LOST (see
_reclaim). Meanwhile every request is refused with WorkerUnavailable, naming the launcher and
what happened to it.
"""

from __future__ import annotations

import logging
import resource
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from ._errors import WorkerError, WorkerUnavailable
from ._fdpass import close_all
from ._launcher_client import LauncherClient
from ._pidfd import ProcessHandle
from ._shim import (
    AdoptRequest,
    ConnectionLost,
    Event,
    HelloReply,
    JobExited,
    JobHandles,
    PingRequest,
    Request,
    RequestFailed,
    ShutdownRequest,
    SlotSettings,
)

log = logging.getLogger("jobmgr.worker")
R = TypeVar("R")
PING_EVERY = 0.5
UNANSWERED_AFTER = 2.0  # a launcher that left a ping unanswered this long is looked at
BUSY_AFTER = 10.0  # ... one that runs but still has not answered is unavailable
HUNG_AFTER = 30.0  # ... and then killed
HELLO_TIMEOUT = 60.0
RETRY_AFTER = (0.5, 1.0, 2.0, 5.0)  # between failed attempts to start a new launcher


class LauncherKeeper:
    """The current launcher connection, and a watchdog that replaces a launcher gone wrong.

    ``on_hello`` gets each launcher's hello (the first one's in ``connect``, a replacement's
    on the watchdog thread) before requests are let through; ``on_availability`` learns when
    the launcher goes down and comes back.
    """

    def __init__(
        self,
        state_dir: Path,
        cgroup_parent: str,
        warm_slots: int,
        slots: SlotSettings,
        on_event: Callable[[Event], None],
        on_hello: Callable[[HelloReply], None],
        on_availability: Callable[[bool], None],
    ) -> None:
        self._state_dir = state_dir
        self._cgroup_parent = cgroup_parent
        self._warm_slots = warm_slots
        self._slots = slots
        self._on_event = on_event
        self._on_hello = on_hello
        self._on_availability = on_availability
        self._lock = threading.Lock()
        self._client: LauncherClient | None = None
        self._held: dict[str, tuple[JobHandles, list[int]]] = {}  # running jobs' handles
        self._want_handles = True  # until this process runs out of descriptors for them
        _raise_fd_limit()
        self._down = ""  # why the launcher is unavailable; empty while it serves
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="jobmgr-launcher-watchdog")
        self._watchdog.daemon = True

    # ---- the worker's side ------------------------------------------------------------------

    def connect(self) -> None:
        """Reach the state dir's launcher (starting one if none runs), greet it, and start
        watching it."""
        client = self._new_client(self._greet)
        with self._lock:
            self._client = client
        self._watchdog.start()

    @property
    def client(self) -> LauncherClient | None:
        return self._client

    @property
    def available(self) -> bool:
        return not self._down


    def request(
        self, message: Request[R], on_reply: Callable[[R | RequestFailed], None] | None = None
    ) -> Future[R | RequestFailed]:
        """Send a request to the launcher; WorkerUnavailable, saying why, while it is down."""
        with self._lock:
            client, down = self._client, self._down
        if down or client is None:
            raise WorkerUnavailable(down or "the job launcher is not running")
        return client.request(message, on_reply)

    def close(self) -> LauncherClient | None:
        """Stop watching; the current connection, for the caller to shut down and close."""
        self._stopping.set()
        self._wake.set()
        if self._watchdog.is_alive():
            self._watchdog.join(timeout=HELLO_TIMEOUT)
        with self._lock:
            client, self._client = self._client, None
            held, self._held = self._held, {}
        for _, fds in held.values():
            close_all(fds)
        return client

    # ---- the handles of running jobs ----------------------------------------------------------

    def _hold(self, handles: JobHandles, fds: list[int]) -> None:
        with self._lock:
            before = self._held.pop(handles.id, None)
            self._held[handles.id] = (handles, fds)
        if before is not None:
            close_all(before[1])

    def _release(self, job_ids: set[str]) -> None:
        with self._lock:
            released = [self._held.pop(job_id) for job_id in job_ids if job_id in self._held]
        for _, fds in released:
            close_all(fds)

    def _hand_over(self, client: LauncherClient) -> None:
        """Give a new launcher, before its first hello, the jobs its predecessor ran."""
        with self._lock:
            held = list(self._held.values())
        asked = [(h.id, client.request(AdoptRequest(h), fds=fds)) for h, fds in held]
        for job_id, answer in asked:
            reply = answer.result(HELLO_TIMEOUT)
            if isinstance(reply, RequestFailed):
                log.error("job %s: the new job launcher could not take it over: %s", job_id,
                          reply.error)

    # ---- the watchdog -----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            client = self._client
            if client is None:
                self._replace("")
                continue
            problem = self._check(client)
            if problem and not self._stopping.is_set():
                self._replace(problem)

    def _check(self, client: LauncherClient) -> str:
        """Ping until the launcher dies or stops answering; then what happened to it."""
        while not self._stopping.is_set():
            sent = time.monotonic()
            try:
                ping = client.request(PingRequest())
            except WorkerError:
                return self._death(client)
            warned = False
            while not ping.done():
                waited = time.monotonic() - sent
                if client.lost.is_set() or _ended(client.handle):
                    return self._death(client)
                if waited >= UNANSWERED_AFTER:
                    state = _state(client.handle)
                    unanswered = f"the job launcher (pid {client.pid}) has not answered for"
                    if state in ("T", "t"):
                        self._unavailable(f"{unanswered} {waited:.0f}s")
                        return self._kill(client, f"froze (process state {state})")
                    if not warned:
                        log.warning("%s %.1fs (state %s)", unanswered, waited, state)
                        warned = True
                    if waited >= BUSY_AFTER:
                        self._unavailable(f"{unanswered} {waited:.0f}s")
                    if waited >= HUNG_AFTER:
                        return self._kill(client, f"hung (process state {state})")
                self._wake.wait(min(PING_EVERY, 0.1))
                self._wake.clear()
                if self._stopping.is_set():
                    return ""
            # The connection may end just after the answer: the wake-up it sent was taken
            # above, so the loss is looked at here, not left to the next ping.
            if ping.exception() is not None or client.lost.is_set():
                return self._death(client)
            self._available()
            self._wake.wait(max(0.0, PING_EVERY - (time.monotonic() - sent)))
            self._wake.clear()
        return ""

    def _death(self, client: LauncherClient) -> str:
        """How a launcher whose connection ended went: its wait status, if this server is its
        parent (it is then reaped here). One still alive is connected to again."""
        if client.descriptors_dropped:
            self._want_handles = False  # its jobs then go on without copies held here
        if client.handle is not None and not client.handle.wait(2.0):
            return "dropped the connection; connecting again"
        if client.process is not None:
            code = client.process.wait()
            how = f"died (killed by signal {-code})" if code < 0 else f"exited ({code})"
            return f"{how}; starting a new one"
        return "died; starting a new one"

    def _kill(self, client: LauncherClient, how: str) -> str:
        handle = client.handle
        if handle is None:
            log.error("the job launcher %s, but it has no pidfd to kill it by", how)
            return ""
        handle.send(signal.SIGKILL)
        handle.wait(10.0)
        if client.process is not None:
            client.process.wait()
        return f"{how} and was killed; starting a new one"

    def _replace(self, how: str) -> None:
        """Start a new launcher in the place of the current one (if any), until one comes up
        or the keeper is closing."""
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            pid = old.pid
            self._unavailable(f"the job launcher (pid {pid}) {how}")
            log.error("the job launcher (pid %s) %s", pid, how)
            old.close()
        for attempt in range(1_000_000):
            if self._stopping.is_set():
                return
            try:
                client = self._new_client(self._adopt_and_greet)
            except Exception as exc:  # anything: keep trying, and say why
                pause = RETRY_AFTER[min(attempt, len(RETRY_AFTER) - 1)]
                self._unavailable(f"the job launcher could not be started again: {exc}")
                log.error("starting a new job launcher failed (retrying in %gs): %s", pause, exc)
                self._stopping.wait(pause)
                continue
            with self._lock:
                self._client = client
            log.info("a new job launcher (pid %s) took over", client.pid)
            self._available(quietly=True)
            return

    def _adopt_and_greet(self, client: LauncherClient) -> HelloReply:
        self._hand_over(client)
        return self._greet(client)

    def _greet(self, client: LauncherClient) -> HelloReply:
        """Greet a launcher; one started for another cgroup parent is replaced if it runs no
        job, and refused (WorkerError, saying what to do) if it does."""
        reply = client.hello(HELLO_TIMEOUT, self._slots, handles=self._want_handles)
        theirs, ours = reply.cgroup_parent, self._cgroup_parent
        if not theirs or theirs == ours:
            return reply
        if reply.running:
            raise WorkerError(
                f"the job launcher of {self._state_dir} runs {len(reply.running)} jobs under"
                f" cgroup parent {theirs!r}, but this server is configured for {ours!r}: start"
                f" it with --cgroup-parent {theirs} until those jobs end, or stop them (kill"
                f" -TERM $(cat {self._state_dir}/launcher.pid) stops them)"
            )
        log.warning(
            "the job launcher was started for cgroup parent %r and runs no job: replacing it"
            " with one for %r",
            theirs,
            ours,
        )
        client.request(ShutdownRequest(0.0)).result(HELLO_TIMEOUT)
        if client.handle is not None:
            client.handle.wait(HELLO_TIMEOUT)
        raise WorkerUnavailable("the job launcher was replaced")  # a new one is started

    def _new_client(self, hello: Callable[[LauncherClient], HelloReply]) -> LauncherClient:
        for attempt in range(3):
            client = LauncherClient(
                self._state_dir, self._cgroup_parent, self._warm_slots, self._forward, self._hold
            )
            try:
                reply = hello(client)
                with self._lock:
                    ended = set(self._held) - {job.id for job in reply.running}
                self._release(ended)  # ended while no launcher watched: recorded on disk
                self._on_hello(reply)
                return client
            except WorkerUnavailable:
                # A launcher killed a moment ago may still accept a connection and then drop
                # it; the next attempt finds its socket refused and starts a new one.
                client.close()
                if attempt == 2:
                    raise
                time.sleep(0.2)
            except BaseException:
                client.close()
                raise
        raise AssertionError("unreachable")

    def _forward(self, event: Event) -> None:
        if isinstance(event, ConnectionLost):
            self._wake.set()
            return
        self._on_event(event)
        if isinstance(event, JobExited):
            self._release({event.id})

    def _unavailable(self, why: str) -> None:
        with self._lock:
            was, self._down = self._down, why
        if not was:
            self._on_availability(False)

    def _available(self, quietly: bool = False) -> None:
        with self._lock:
            was, self._down = self._down, ""
        if was:
            if not quietly:
                log.info("the job launcher answers again")
            self._on_availability(True)


def _raise_fd_limit() -> None:
    """Let this process open as many descriptors as it may: it holds four per running job."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _ended(handle: ProcessHandle | None) -> bool:
    return handle is not None and handle.wait(0)


def _state(handle: ProcessHandle | None) -> str:
    """The launcher's process state letter (R, S, D, T, ...), "?" if unknown. Read by number,
    then checked through the pidfd: had it ended meanwhile, the number might name another."""
    if handle is None:
        return "?"
    try:
        with open(f"/proc/{handle.pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"
    return "?" if _ended(handle) else state
