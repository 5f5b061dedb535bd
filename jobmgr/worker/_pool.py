"""The warm pool: spare slots made ahead of time, so a start finds its namespaces made.

Joining a cgroup by writing cgroup.procs waits for an RCU grace period (about 20 ms here under
v1), which no start should pay; on cgroup2 the zygote clones each slot straight into its cgroup
(CLONE_INTO_CGROUP), which does not wait, but new namespaces and a view still take a few ms.
So the pool keeps ``size`` spares: each a cgroup (created unlimited, its devices limited
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
from ._frames import MAX_CHUNK
from ._pidfd import ProcessHandle
from ._shim import SlotSettings, StartRefused, StartStage, encode_setup
from ._slot import SPARE_STATES, Slot, SlotState
from ._status import Stream
from ._uids import Lease, NoUidLeft, UidLeases
from .cgroups import JOB_DEVICES, CgroupDriver

F_SETPIPE_SZ = 1031
ZYGOTE = Path(__file__).with_name("_pid1")  # built from _pid1.c by setup.py
log = logging.getLogger("jobmgr.launcher")


class WarmPool:
    """The spare slots; ``watch`` hands each new one to whoever reads its pipes, and
    ``watch_zygote`` each zygote to whoever learns of its exit (through its pidfd)."""

    def __init__(
        self,
        state_dir: Path,
        driver: CgroupDriver,
        size: int,
        watch: Callable[[Slot], None],
        watch_zygote: Callable[[ProcessHandle], None],
    ) -> None:
        self.spares: dict[str, Slot] = {}
        self._driver = driver
        self._size = size
        self._watch = watch
        self._closed = False
        # A spare that cannot even warm up would fail every start: none is made until a start
        # (which then reports the reason) succeeds again.
        self._broken = False
        self._taken: list[Slot] = []  # slots starts took, until their inits answer
        self._placements: set[bool] = set()  # how mids entered their cgroups (see placed)
        self.settings: SlotSettings | None = None
        self._leases: UidLeases | None = None
        self._dir = state_dir / "spares"
        shutil.rmtree(self._dir, ignore_errors=True)  # a dead launcher's
        self._dir.mkdir(mode=0o700)
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._zygote, self.zygote = _spawn_zygote()
        watch_zygote(self.zygote)

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
        """Make spares until there are ``size`` (none while broken, closed or unconfigured).

        While a start waits for its init to answer, none is made unless fewer than half are
        left (a burst of starts still finds spares): the answer comes within a few ms, and a
        spare made meanwhile (its cgroup, device rules and pipes here, a fork and new
        namespaces in the zygote: about 1 ms of CPU each) would hold back reading it, and so
        the start's reply.
        """
        if self._closed or self._broken or self.settings is None:
            return
        self._taken = [slot for slot in self._taken if slot.state is SlotState.STARTING]
        left = sum(1 for spare in self.spares.values() if spare.state in SPARE_STATES)
        if self._taken and 2 * left >= self._size:
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
        self._taken.append(spare)
        return spare

    def started(self) -> None:
        """A start succeeded: slots can be made again."""
        self._broken = False

    def failed_to_warm(self, spare: Slot, reason: str) -> None:
        log.error("warming a job slot failed: %s", reason)
        self._broken = True
        if spare.state in SPARE_STATES:
            spare.move(SlotState.DISCARDED)

    def placed(self, cloned: bool) -> None:
        """A mid reported how it entered its slot's cgroup: said once per way."""
        if cloned not in self._placements:
            self._placements.add(cloned)
            how = "by clone3(CLONE_INTO_CGROUP)" if cloned else "by writing cgroup.procs"
            log.info("job slots enter their cgroups %s", how)

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

    def zygote_ended(self) -> None:
        """The zygote exited: unless closing, start another, since every spare comes from it."""
        self._zygote.close()
        if self._closed:
            return
        log.error("the zygote exited (wait status %s); starting another", self.zygote.status)
        self.zygote.close()
        self._zygote, self.zygote = _spawn_zygote()

    def stop_zygote(self) -> None:
        """Close the zygote's socket, which ends it, and reap it."""
        self._zygote.close()
        if self.zygote.status is None:
            os.waitid(os.P_PIDFD, self.zygote.fd, os.WEXITED)
        self.zygote.close()

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
            cgroup = self._driver.create(slot_id, self.settings.limits)
            undo.callback(cgroup.destroy)
            cgroup.allow_devices(JOB_DEVICES)
            out_r, out_w = _pipe(undo)
            err_r, err_w = _pipe(undo)
            report_r, report_w = _pipe(undo)
            order_r, order_w = _pipe(undo)
            for fd in (out_w, err_w):
                fcntl.fcntl(fd, F_SETPIPE_SZ, MAX_CHUNK)
            os.write(order_w, encode_setup(lease.uid, lease.uid, self.settings))
            # Held until the mid reports the init's pid, then closed for its pidfd to take:
            # out of descriptors, a start is refused here, never left without a pidfd.
            pidfd_room = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            undo.callback(os.close, pidfd_room)
            into = (self.settings.clone_into_cgroup and cgroup.clone_dir) or ""
            where = b"\0".join(os.fsencode(path) for path in (into, *cgroup.procs_files))
            fds = [self._devnull, out_w, err_w, order_r, report_w, lease.fd]
            socket.send_fds(self._zygote, [where], fds)
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
            limits=self.settings.limits,
            path=path,
            log_fd=log_fd,
            pipes={out_r: Stream.STDOUT, err_r: Stream.STDERR},
            report_fd=report_r,
            order_fd=order_w,
            pidfd_room=pidfd_room,
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


def refuse_if_exhausted(exc: OSError) -> None:
    """A full disk or no file descriptors left: refuse the start, saying which."""
    refuse_if_full(exc)
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        message = f"the server has no file descriptors left for a new job: {exc}"
        raise StartRefused(StartStage.DESCRIPTORS, message) from exc


@contextlib.contextmanager
def _refused_if_exhausted() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        refuse_if_exhausted(exc)
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


def _spawn_zygote() -> tuple[socket.socket, ProcessHandle]:
    """Run the zygote program that forks every slot (see _pid1.c): our end of its socket, and
    its pidfd (taken before anything could reap it: only pidfds reap, see _pidfd)."""
    if not os.access(ZYGOTE, os.X_OK):
        raise WorkerError(f"{ZYGOTE} is missing or not executable: reinstall jobmgr")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.set_inheritable(True)
    pid = os.posix_spawn(ZYGOTE, [str(ZYGOTE), str(theirs.fileno())], {})
    theirs.close()
    return ours, ProcessHandle.of_child(pid)
