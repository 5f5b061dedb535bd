"""What a caller asks for: the job's command, its resource limits and its settings."""

from __future__ import annotations

import math
import pwd
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

from ._errors import InvalidSpec

MiB = 1024 * 1024
MAX_REQUEST_ID = 200

# What the kernel can take, and what leaves a job room to run: a pids limit of 1 would leave
# none beside its init, a memory limit under 1 MiB none for anything at all.
_LIMIT_RANGES: dict[str, tuple[float, float, str]] = {
    "cpu": (0.01, 4096, " CPUs"),
    "memory_bytes": (MiB, 2**60, " bytes"),
    "io_read_bps": (1, 2**60, " bytes/s"),
    "io_write_bps": (1, 2**60, " bytes/s"),
    "pids": (2, 4194304, ""),
    "disk_bytes": (MiB, 2**60, " bytes"),
}


@dataclass(frozen=True)
class Limits:
    """Per-job resource limits. ``None`` or ``0`` means unlimited.

    cpu:            CPUs worth of time per wall second (0.5 = half a core).
    memory_bytes:   RAM (swap included) before the OOM killer fires.
    io_read_bps:    bytes per second read from each block device.
    io_write_bps:   bytes per second written to each block device.
    pids:           processes and threads alive at once.
    disk_bytes:     what the job may write: its scratch directory, /tmp, /var/tmp and /dev/shm
                    together (one tmpfs, so it counts against memory_bytes too).
    """

    cpu: float | None = None
    memory_bytes: int | None = None
    io_read_bps: int | None = None
    io_write_bps: int | None = None
    pids: int | None = None
    disk_bytes: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == 0:
                continue
            low, high, unit = _LIMIT_RANGES[f.name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidSpec(f"limit {f.name} must be a number, got {value!r}")
            if f.name != "cpu" and not isinstance(value, int):
                raise InvalidSpec(f"limit {f.name} must be a whole number, got {value!r}")
            if not (math.isfinite(value) and low <= value <= high):
                raise InvalidSpec(
                    f"limit {f.name} must be 0 (unlimited) or between {low} and {high}{unit},"
                    f" got {value}"
                )

    def merged_over(self, defaults: Limits) -> Limits:
        """These limits, with every unset (``None``) field taken from ``defaults``."""
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(defaults, **{k: v for k, v in given.items() if v is not None})

    def check_within(self, maximum: Limits) -> None:
        """Raise InvalidSpec naming the first limit above ``maximum`` (unlimited counts)."""
        for f in fields(self):
            top = maximum.effective(f.name)
            value = self.effective(f.name)
            if top is not None and (value is None or value > top):
                shown = "unlimited" if value is None else value
                raise InvalidSpec(
                    f"limit {f.name} = {shown} is above the server's maximum of {top}"
                )

    def effective(self, name: str) -> float | int | None:
        """The limit's value, with 0 folded into None (unlimited)."""
        value: float | int | None = getattr(self, name)
        return value or None

    def disk_within_memory(self) -> Limits:
        """These limits with the disk limit lowered to the memory limit, if above it: what a
        default disk limit becomes for a job that asks for little memory."""
        disk, memory = self.effective("disk_bytes"), self.effective("memory_bytes")
        if memory is not None and (disk is None or disk > memory):
            return replace(self, disk_bytes=int(memory))
        return self

    def check_disk_fits(self) -> None:
        """Raise InvalidSpec if the disk limit is above the memory limit: the job's files live
        in memory charged to it, so it would be OOM-killed before its disk was full. (An
        unlimited disk is held by the memory limit alone.)"""
        disk, memory = self.effective("disk_bytes"), self.effective("memory_bytes")
        if memory is not None and disk is not None and disk > memory:
            raise InvalidSpec(
                f"limit disk_bytes = {disk} is above memory_bytes = {memory}: a job's files "
                "are kept in its memory, so its disk limit must fit in its memory limit"
            )


DEFAULT_LIMITS = Limits(
    cpu=1.0,
    memory_bytes=512 * MiB,
    io_read_bps=10 * MiB,
    io_write_bps=10 * MiB,
    pids=1024,
    disk_bytes=256 * MiB,
)
UNLIMITED = Limits(cpu=0, memory_bytes=0, io_read_bps=0, io_write_bps=0, pids=0, disk_bytes=0)

SCRATCH = "/scratch"  # the job's own writable directory, its default working directory


@dataclass(frozen=True)
class Mount:
    """A host path bound into the job's view (only where the worker's Sandbox allows it).

    source:    an absolute host path: a directory (with everything mounted below it) or a file.
    target:    where the job sees it: an existing path of its view, or a new entry at its top.
    writable:  the job may write through it; read-only otherwise.
    """

    source: str
    target: str
    writable: bool = False

    def __post_init__(self) -> None:
        for name in ("source", "target"):
            path = getattr(self, name)
            if not isinstance(path, str) or not _is_clean_path(path):
                raise InvalidSpec(
                    f"mount {name} must be an absolute path without '.', '..' or '//', got {path!r}"
                )
        if self.target == "/":
            raise InvalidSpec("a mount cannot replace the job's root: use rootfs for that")


def _is_clean_path(path: str) -> bool:
    return (
        path.startswith("/")
        and "\0" not in path
        and (path == "/" or not path.endswith("/"))
        and all(part not in ("", ".", "..") for part in path.split("/")[1:] if path != "/")
    )


@dataclass(frozen=True)
class JobSpec:
    """A job to start.

    argv:    the command and its arguments; argv[0] is looked up in PATH. No shell is involved.
    limits:  overrides of the worker's default limits (``None`` fields take the default).
    owner:   who asked, recorded with the job as it is (the service puts the identity of the
             caller here: its certificate's whole Subject, RFC 4514).
    env:     the job's environment; ``None`` means a minimal clean one (PATH, HOME, LANG).
    cwd:     working directory inside the job; ``None`` means its scratch directory.
    timeout: seconds the job may run before it is stopped (with the grace period); None: no end.
    run_as:  user name or numeric uid to run the command as; None: the worker's default (a uid
             of the job's own). ``root`` runs it as root of a user namespace of its own.
    mounts:  host paths bound into the job's view (each allowed by the worker's Sandbox).
    rootfs:  a directory tree to use as the job's root instead of the host's (allowed by the
             worker's Sandbox); None: the host's root, read-only.
    request_id: the caller's id for this start (up to 200 characters): a start retried with
             the same id and owner returns the job the first one started, never a second.
    """

    argv: Sequence[str]
    limits: Limits = field(default_factory=Limits)
    owner: str = ""
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    timeout: float | None = None
    run_as: str | None = None
    mounts: Sequence[Mount] = ()
    rootfs: str | None = None
    request_id: str = ""

    def __post_init__(self) -> None:
        if len(self.request_id) > MAX_REQUEST_ID:
            raise InvalidSpec(
                f"the request id is {len(self.request_id)} characters long; at most "
                f"{MAX_REQUEST_ID} are kept (a UUID is 36)"
            )
        if self.timeout is not None and not 0 < self.timeout < 10 * 365 * 86400:
            raise InvalidSpec(f"timeout must be a positive number of seconds, got {self.timeout}")
        if isinstance(self.argv, str | bytes):
            raise InvalidSpec("argv must be a list of strings, not a single string")
        object.__setattr__(self, "argv", tuple(self.argv))
        if not self.argv or not self.argv[0]:
            raise InvalidSpec("the command is empty: give at least the program to run")
        for arg in self.argv:
            if not isinstance(arg, str):
                raise InvalidSpec(f"argv items must be strings, got {type(arg).__name__}")
            if "\0" in arg:
                raise InvalidSpec("argv items cannot contain NUL bytes")
        if self.env is not None:
            for key, value in self.env.items():
                if not key or "=" in key or "\0" in key or "\0" in value:
                    raise InvalidSpec(f"invalid environment variable name or value: {key!r}")
        if self.cwd is not None and ("\0" in self.cwd or not self.cwd.startswith("/")):
            raise InvalidSpec(f"cwd must be an absolute path, got {self.cwd!r}")
        object.__setattr__(self, "mounts", tuple(self.mounts))
        for mount in self.mounts:
            if not isinstance(mount, Mount):
                raise InvalidSpec(f"mounts must be Mount items, got {type(mount).__name__}")
        targets = [mount.target for mount in self.mounts]
        if len(set(targets)) != len(targets):
            raise InvalidSpec(f"two mounts share a target: {sorted(targets)}")
        if self.rootfs is not None and (not _is_clean_path(self.rootfs) or self.rootfs == "/"):
            raise InvalidSpec(
                f"rootfs must be an absolute path of a directory other than /, got {self.rootfs!r}"
            )


DEFAULT_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": SCRATCH,
    "LANG": "C.UTF-8",
}


def resolve_user(
    user: str | None, allowed: Collection[str] | None
) -> tuple[int | None, int | None, bool]:
    """(uid, gid, root) for ``user`` (a name or a uid), if ``allowed`` lets jobs run as it
    (None allows any): None, None for a uid of the job's own, and root True for root (of a
    user namespace of the job's own). InvalidSpec otherwise, saying why."""
    if user is None:
        return None, None, False
    if allowed is not None and user not in allowed:
        names = ", ".join(sorted(allowed)) or "none"
        raise InvalidSpec(f"jobs may not run as {user!r} here (allowed: {names})")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise InvalidSpec(f"no such user: {user!r}") from None
    if entry.pw_uid == 0:
        return None, None, True
    return entry.pw_uid, entry.pw_gid, False
