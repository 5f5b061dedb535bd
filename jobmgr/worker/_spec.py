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
}


@dataclass(frozen=True)
class Limits:
    """Per-job resource limits. ``None`` or ``0`` means unlimited.

    cpu:            CPUs worth of time per wall second (0.5 = half a core).
    memory_bytes:   RAM (swap included) before the OOM killer fires.
    io_read_bps:    bytes per second read from each block device.
    io_write_bps:   bytes per second written to each block device.
    pids:           processes and threads alive at once.
    """

    cpu: float | None = None
    memory_bytes: int | None = None
    io_read_bps: int | None = None
    io_write_bps: int | None = None
    pids: int | None = None

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


DEFAULT_LIMITS = Limits(
    cpu=1.0, memory_bytes=512 * MiB, io_read_bps=10 * MiB, io_write_bps=10 * MiB, pids=1024
)
UNLIMITED = Limits(cpu=0, memory_bytes=0, io_read_bps=0, io_write_bps=0, pids=0)


@dataclass(frozen=True)
class JobSpec:
    """A job to start.

    argv:    the command and its arguments; argv[0] is looked up in PATH. No shell is involved.
    limits:  overrides of the worker's default limits (``None`` fields take the default).
    owner:   who asked, recorded with the job as it is (the service puts the identity of the
             caller here: its certificate's whole Subject, RFC 4514).
    env:     the job's environment; ``None`` means a minimal clean one (PATH, HOME, LANG).
    cwd:     working directory inside the job; ``None`` means ``/``.
    timeout: seconds the job may run before it is stopped (with the grace period); None: no end.
    run_as:  user name or numeric uid to run the command as; None: the worker's default.
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


DEFAULT_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/",
    "LANG": "C.UTF-8",
}


def resolve_user(
    user: str | None, allowed: Collection[str] | None
) -> tuple[int | None, int | None]:
    """The uid and gid of ``user`` (a name or a uid), if ``allowed`` lets jobs run as it
    (None allows any); (None, None) for no user. InvalidSpec otherwise, saying why."""
    if user is None:
        return None, None
    if allowed is not None and user not in allowed:
        names = ", ".join(sorted(allowed)) or "none"
        raise InvalidSpec(f"jobs may not run as {user!r} here (allowed: {names})")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise InvalidSpec(f"no such user: {user!r}") from None
    return entry.pw_uid, entry.pw_gid
