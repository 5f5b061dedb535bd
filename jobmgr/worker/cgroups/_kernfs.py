"""cgroupfs file access, and the tables and loops both cgroup versions share.

Everything here works on paths handed in by a driver; nothing knows which version it serves.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .._errors import WorkerError
from .._spec import Limits
from . import _devices
from ._base import CgroupStats

POLL_SECONDS = 0.01
# A killed process leaves cgroup.procs, and its cgroup becomes removable, a few milliseconds after
# SIGKILL; two seconds covers a loaded machine without hanging a caller on a truly stuck task.
SETTLE_SECONDS = 2.0

LimitValue = float | int | None


class CgroupError(WorkerError):
    """A job cgroup could not be created, configured, read or removed."""


@dataclass(frozen=True)
class Knob:
    """One interface file that carries (part of) a limit.

    render:    the text to write for a limit value (``None`` = unlimited); returning ``None``
               means the value a new cgroup starts with, which is its parent's.
    fallback:  written instead when the kernel lacks ``filename``.
    optional:  skip silently when the kernel lacks ``filename`` and there is no fallback.
    """

    controller: str
    filename: str
    render: Callable[[LimitValue], str | None]
    fallback: Knob | None = None
    optional: bool = False


@dataclass(frozen=True)
class Reading:
    """One interface file a statistic is parsed from."""

    controller: str
    filename: str
    parse: Callable[[str], float | int | bool]


KnobTable = Mapping[str, Sequence[Knob]]
"""``Limits`` field -> the knobs it sets, written in the listed order when the limit is lowered
and in the reverse order when it is raised (a pair the kernel keeps ordered, such as v1's
memory and memory+swap, stays valid at every step)."""

ReadingTable = Mapping[str, Sequence[Reading]]
"""``CgroupStats`` field -> files to parse it from; the first one the kernel has wins."""


def read_text(path: str) -> str:
    """The content of an interface file, stripped."""
    # os.read, not open(): a Python file object adds fstat, ioctl and lseek calls to every
    # read, and the launcher reads a dozen of these files per job.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii").strip()


def write_text(path: str, text: str) -> None:
    """Write one value with a single write(2), as cgroupfs expects; errors name file and value."""
    data = text.encode()
    try:
        # No O_CREAT: a missing file means a missing controller, never something to create.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(f"cannot write {text!r} to {path}: {e.strerror}") from e


def keyed_int(text: str, key: str) -> int:
    """The value of ``key`` in a flat-keyed file (``key value`` lines); 0 when absent."""
    for line in text.splitlines():
        k, _, value = line.partition(" ")
        if k == key:
            return int(value)
    return 0


def read_pids(procs_files: Iterable[str]) -> list[int]:
    """Sorted union of the PIDs listed in these cgroup.procs files; a missing file lists none."""
    pids: set[int] = set()
    for path in procs_files:
        try:
            pids.update(int(line) for line in read_text(path).split())
        except FileNotFoundError:
            continue
    return sorted(pids)


def sigkill_members(procs_files: Sequence[str]) -> None:
    """SIGKILL every process the cgroup lists, each through a pidfd checked against the list.

    A number read from cgroup.procs may name another process by the time it is used (its
    process exited and the number was reused). So a pidfd is opened for each number first,
    the list is read again, and the signal goes through the pidfd only to the numbers still
    listed: a process its pidfd shows alive after that second read held its number all along.
    """
    handles: dict[int, int] = {}
    try:
        for pid in read_pids(procs_files)[:_KILL_BATCH]:
            try:
                handles[pid] = os.pidfd_open(pid)
            except OSError:
                continue  # gone already, or not a process leader
        listed = set(read_pids(procs_files))
        for pid, fd in handles.items():
            if pid in listed:
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                except ProcessLookupError:
                    continue
    finally:
        for fd in handles.values():
            os.close(fd)


_KILL_BATCH = 512  # pidfds open at once; kill_until_empty repeats for the rest


def kill_until_empty(procs_files: Sequence[str], kill_round: Callable[[], None]) -> None:
    """Run ``kill_round`` until the cgroup lists no process, for at most SETTLE_SECONDS.

    Repeating catches children forked between reading cgroup.procs and signalling their parent.
    Giving up quietly is deliberate: what is left has been signalled and is exiting or stuck
    in uninterruptible sleep; ``destroy`` reports it if the cgroup then stays busy.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    while read_pids(procs_files) and time.monotonic() < deadline:
        kill_round()
        time.sleep(POLL_SECONDS)


def check_name(name: str) -> str:
    """``name`` if it is usable as one directory name, else ValueError."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise ValueError(f"invalid cgroup name {name!r}")
    return name


def check_parent(parent: str) -> str:
    """``parent`` as a relative path of valid names (``jobmgr`` or ``a/b``), else ValueError."""
    parts = parent.strip("/").split("/")
    for part in parts:
        check_name(part)
    return "/".join(parts)


def make_dirs(dirs: Sequence[str]) -> None:
    """Create each job directory (its parents as needed); all or none are left behind.

    The leaf must not exist yet: a fresh cgroup is one whose limits are all at their unlimited
    defaults, which the knob tables rely on.
    """
    made: list[str] = []
    try:
        for path in dirs:
            try:
                os.mkdir(path)
            except FileNotFoundError:  # the parent is made once, not checked every time
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.mkdir(path)
            made.append(path)
    except OSError as e:
        remove_dirs(made)
        raise CgroupError(f"cannot create cgroup {e.filename}: {e.strerror}") from e


def destroy_dirs(dirs: Sequence[str], kill_all: Callable[[], None]) -> None:
    """Remove a job's directories, killing what is left in them first if one is busy.

    Removal is tried first because there is usually nothing left (a job ends with its PID
    namespace): the kill loop's reads of every cgroup.procs are then not paid at all.
    """
    try:
        remove_dirs(dirs, settle=0.0)
    except CgroupError:
        kill_all()
        remove_dirs(dirs)


def remove_dirs(dirs: Iterable[str], settle: float = SETTLE_SECONDS) -> None:
    """rmdir each directory, retrying EBUSY for ``settle`` seconds while the last processes
    finish exiting.

    Missing directories are fine, so removal is idempotent.
    """
    deadline = time.monotonic() + settle
    for path in dirs:
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise CgroupError(f"cannot remove cgroup {path}: {e.strerror}") from e
                time.sleep(POLL_SECONDS)


def child_dirs(path: str) -> set[str]:
    """Names of the subdirectories of ``path``; none if it does not exist."""
    try:
        with os.scandir(path) as entries:
            return {e.name for e in entries if e.is_dir(follow_symlinks=False)}
    except FileNotFoundError:
        return set()


def change_limits(table: KnobTable, now: Limits, to: Limits, dirs: Mapping[str, str]) -> None:
    """Write the knobs of ``table`` whose limit differs between ``now`` (what the cgroup has;
    ``UNLIMITED`` for a fresh one) and ``to``; ``dirs`` maps controller -> its directory. A
    spare is made with the server's default limits, so a start that keeps them writes
    nothing."""
    for field, knobs in table.items():
        before, after = now.effective(field), to.effective(field)
        if before == after:
            continue
        raised = after is None or (before is not None and after > before)
        for knob in reversed(knobs) if raised else knobs:
            _apply_knob(knob, after, dirs)


def apply_knobs(knobs: Iterable[Knob], value: LimitValue, dirs: Mapping[str, str]) -> None:
    """Write each knob for one value (settings that are not limits, such as memory.oom.group)."""
    for knob in knobs:
        _apply_knob(knob, value, dirs)


def changed(now: Limits, to: Limits, names: Iterable[str]) -> bool:
    """Whether any of the limits ``names`` differs between ``now`` and ``to``."""
    return any(now.effective(name) != to.effective(name) for name in names)


def _apply_knob(knob: Knob, value: LimitValue, dirs: Mapping[str, str]) -> None:
    directory = dirs[knob.controller]
    parent = os.path.dirname(directory)
    if not _kernel_has(parent, knob.filename):
        if knob.fallback is not None:
            _apply_knob(knob.fallback, value, dirs)
            return
        if knob.optional:
            return
    text = knob.render(value)
    if text is None:
        text = read_text(os.path.join(parent, knob.filename))
    write_text(os.path.join(directory, knob.filename), text)


@functools.cache
def _kernel_has(parent: str, filename: str) -> bool:
    """Whether cgroups in this hierarchy have ``filename`` (asked of the parent, once)."""
    return os.path.exists(os.path.join(parent, filename))


def write_device_rules(path: str, rule: str) -> None:
    """Write ``MAJ:MIN <rule>`` to ``path`` for every throttled device, one write per device.

    Only the root filesystem's disk must accept the rule: another disk the kernel refuses (a
    removable drive, a device without a request queue) is skipped so job creation still works.
    """
    root = _devices.root_device()
    for major, minor in _devices.throttle_devices():
        try:
            write_text(path, f"{major}:{minor} {rule}")
        except CgroupError:
            if (major, minor) == root:
                raise


def read_stats(table: ReadingTable, dirs: Mapping[str, str]) -> CgroupStats:
    """Parse a ``CgroupStats`` from the files ``table`` names; ``dirs`` maps controller -> dir."""
    values = {field: _read_one(readings, dirs) for field, readings in table.items()}
    return CgroupStats(
        cpu_seconds=float(values["cpu_seconds"]),
        peak_memory_bytes=int(values["peak_memory_bytes"]),
        oom_killed=bool(values["oom_killed"]),
    )


def _read_one(readings: Sequence[Reading], dirs: Mapping[str, str]) -> float | int | bool:
    *alternatives, last = readings
    for reading in alternatives:
        path = os.path.join(dirs[reading.controller], reading.filename)
        if os.path.exists(path):
            return reading.parse(read_text(path))
    path = os.path.join(dirs[last.controller], last.filename)
    try:
        return last.parse(read_text(path))
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {e.strerror}") from e
