"""The warm pool: spare slots made ahead of time, so a start finds its namespaces made.

Joining a cgroup v1 waits for an RCU grace period (about 20 ms here), which no start should
pay. So the pool keeps ``size`` spares: each a cgroup (created unlimited, its devices limited
to the view's /dev), a uid of its own (_uids) and an init already waiting in it, forked by the
zygote (see _pid1.c for why a zygote), which builds the job's filesystem view from the slot's
set-up (_sandbox.c) while it waits. A spare's log file is made as it warms, in ``spares/``; a
start moves it into ``jobs/`` with its record written, so a start creates no file and
``jobs/`` holds only logs that have a record.

No spare is made before a hello has said how (``configure``): the hidden paths and the uids
are the worker's to decide.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from ._errors import WorkerError
from ._outputlog import MAX_CHUNK
from ._shim import SlotSettings, StartRefused, StartStage, encode_setup
from ._slot import SPARE_STATES, Slot, SlotState
from ._spec import UNLIMITED
from ._status import Stream
from ._uids import Lease, NoUidLeft, UidLeases
from .cgroups import JOB_DEVICES, CgroupDriver

F_SETPIPE_SZ = 1031
ZYGOTE = Path(__file__).with_name("_pid1")  # built from _pid1.c by setup.py
log = logging.getLogger("jobmgr.launcher")


class WarmPool:
    """The spare slots; ``watch`` hands each new one to whoever reads its pipes."""

    def __init__(
        self, state_dir: Path, driver: CgroupDriver, size: int, watch: Callable[[Slot], None]
    ) -> None:
        self.spares: dict[str, Slot] = {}
        self._driver = driver
        self._size = size
        self._watch = watch
        self._closed = False
        # A spare that cannot even warm up would fail every start: none is made until a start
        # (which then reports the reason) succeeds again.
        self._broken = False
        self.settings: SlotSettings | None = None
        self._leases: UidLeases | None = None
        self._dir = state_dir / "spares"
        shutil.rmtree(self._dir, ignore_errors=True)  # a dead launcher's
        self._dir.mkdir(mode=0o700)
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._zygote, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.zygote_pid = _spawn_zygote(zygote_end)
        zygote_end.close()

    def configure(self, settings: SlotSettings) -> None:
        """Make slots as ``settings`` say from now on; spares made otherwise are let go."""
        if settings == self.settings:
            return
        self.settings = settings
        self._leases = UidLeases(settings.uid_first, settings.uid_last)
        self._broken = False
        for spare in self.spares.values():
            if spare.state in SPARE_STATES:
                spare.move(SlotState.DISCARDED)
                close_order(spare)
        # Before the hello is answered: a server that is up finds its spares made.
        self.refill()

    def refill(self) -> None:
        """Make spares until there are ``size`` (none while broken, closed or unconfigured)."""
        if self._closed or self._broken or self.settings is None:
            return
        try:
            for _ in range(self._size - len(self.spares)):
                self._make()
        except StartRefused:
            pass  # the disk is full or fds ran out: a start will say so

    def take(self) -> Slot:
        """A spare for a start, ready ones first; a new one if there is none."""
        spares = [s for s in self.spares.values() if s.state in SPARE_STATES]
        ready = [s for s in spares if s.state is SlotState.READY]
        spare = (ready or spares or [self._make()])[0]
        del self.spares[spare.id]
        return spare

    def started(self) -> None:
        """A start succeeded: slots can be made again."""
        self._broken = False

    def failed_to_warm(self, spare: Slot, reason: str) -> None:
        log.error("warming a job slot failed: %s", reason)
        self._broken = True
        if spare.state in SPARE_STATES:
            spare.move(SlotState.DISCARDED)

    def forget(self, spare: Slot) -> None:
        """``spare`` has ended."""
        del self.spares[spare.id]

    def close(self) -> None:
        """Make no more spares, and let the ones waiting go (their inits exit)."""
        self._closed = True
        for spare in self.spares.values():
            if spare.state in SPARE_STATES:
                spare.move(SlotState.DISCARDED)
                close_order(spare)

    def stop_zygote(self, reaped: bool) -> None:
        """Close the zygote's socket, which ends it; wait for it unless already ``reaped``."""
        self._zygote.close()
        if not reaped:
            os.waitpid(self.zygote_pid, 0)

    def _make(self) -> Slot:
        if self.settings is None or self._leases is None:
            raise StartRefused(StartStage.SETUP, "the launcher has not been told how to make slots")
        slot_id = str(uuid.uuid4())
        path = self._dir / slot_id
        # Whatever is made before a failure (out of fds, say) is undone: each failed warm-up
        # would otherwise keep a file, a cgroup, a uid and up to nine fds.
        with contextlib.ExitStack() as undo, _refused_if_exhausted():
            log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            undo.callback(path.unlink, missing_ok=True)
            undo.callback(os.close, log_fd)
            lease = _lease(self._leases)
            undo.callback(os.close, lease.fd)
            cgroup = self._driver.create(slot_id, UNLIMITED)
            undo.callback(cgroup.destroy)
            cgroup.allow_devices(JOB_DEVICES)
            out_r, out_w = _pipe(undo)
            err_r, err_w = _pipe(undo)
            report_r, report_w = _pipe(undo)
            order_r, order_w = _pipe(undo)
            for fd in (out_w, err_w):
                fcntl.fcntl(fd, F_SETPIPE_SZ, MAX_CHUNK)
            os.write(order_w, encode_setup(lease.uid, lease.uid, self.settings))
            procs = b"\0".join(os.fsencode(procs) for procs in cgroup.procs_files)
            fds = [self._devnull, out_w, err_w, order_r, report_w, lease.fd]
            socket.send_fds(self._zygote, [procs], fds)
            undo.pop_all()
        # The init holds the lease now: the uid is the slot's until the init exits.
        for fd in (out_w, err_w, report_w, order_r, lease.fd):
            os.close(fd)
        for fd in (out_r, err_r, report_r):
            os.set_blocking(fd, False)
        spare = Slot(
            id=slot_id,
            uid=lease.uid,
            cgroup=cgroup,
            path=path,
            log_fd=log_fd,
            pipes={out_r: Stream.STDOUT, err_r: Stream.STDERR},
            report_fd=report_r,
            order_fd=order_w,
        )
        self.spares[slot_id] = spare
        self._watch(spare)
        return spare


def close_order(slot: Slot) -> None:
    """Close the slot's order pipe: an init still waiting for its order exits quietly."""
    if slot.order_fd is not None:
        os.close(slot.order_fd)
        slot.order_fd = None


def refuse_if_full(exc: OSError) -> None:
    """A write or create in the state dir failed: if the disk is full, refuse the start."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StartRefused(
            StartStage.SPACE, f"the server's state directory is full: {exc}"
        ) from exc


@contextlib.contextmanager
def _refused_if_exhausted() -> Iterator[None]:
    """A full disk or no file descriptors left: refuse the start, saying which."""
    try:
        yield
    except OSError as exc:
        refuse_if_full(exc)
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            message = f"the server has no file descriptors left for a new job: {exc}"
            raise StartRefused(StartStage.DESCRIPTORS, message) from exc
        raise


def _lease(leases: UidLeases) -> Lease:
    try:
        return leases.take()
    except NoUidLeft as exc:
        raise StartRefused(StartStage.UIDS, f"no uid is free for a new job: {exc}") from exc


def _pipe(undo: contextlib.ExitStack) -> tuple[int, int]:
    """A new pipe whose ends ``undo`` closes."""
    read_end, write_end = os.pipe()
    undo.callback(os.close, read_end)
    undo.callback(os.close, write_end)
    return read_end, write_end


def _spawn_zygote(sock: socket.socket) -> int:
    """Run the zygote program that forks every slot (see _pid1.c), on its end of ``sock``."""
    if not os.access(ZYGOTE, os.X_OK):
        raise WorkerError(f"{ZYGOTE} is missing or not executable: reinstall jobmgr")
    sock.set_inheritable(True)
    return os.posix_spawn(ZYGOTE, [str(ZYGOTE), str(sock.fileno())], {})
