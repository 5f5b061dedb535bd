"""The sandbox every job runs in: what the worker is told (``Sandbox``), and the checks made on
it once, at start, and on each request's mounts and root filesystem.

The view itself is built by the init (_sandbox.c) and the job's privileges are dropped by its
first process (_privilege.c); this module decides what they are given: the host paths to hide,
the uids jobs get, and whether a request's mounts and root are allowed.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import InvalidSpec, WorkerError
from ._shim import SlotSettings
from ._spec import Limits, Mount

# systemd's table of uid ranges leaves 1879048192...2147483647 to no one (its container ranges
# end below it); 65536 uids, the first with its low 16 bits zero, as container managers pick.
DEFAULT_UID_RANGE = (0x70000000, 0x7000FFFF)
DEFAULT_HIDDEN = ("/root", "/home", "/run", "/var/run")
LIBSECCOMP = "libseccomp.so.2"
LIBSECCOMP_HINT = (
    "install it (Debian, Ubuntu: apt-get install libseccomp2; Fedora, RHEL: dnf install "
    "libseccomp; Alpine: apk add libseccomp)"
)
ID_FILES = ("/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid")


@dataclass(frozen=True)
class Sandbox:
    """How every job is shut in, beyond its namespaces and its cgroup.

    uid_range:        (first, last): each job runs as a uid (and gid) of its own from here,
                      which no other live job has; a root job's namespace maps to one too.
    hidden_paths:     host paths the job's view shows as empty (the worker's state directory
                      is always among them).
    mount_sources:    host paths a job may bind into its view (``Mount``): each allows itself
                      and what is below it, read-only, or writable too when written ``PATH:rw``.
    rootfs_dirs:      directories a job may use as its root (``JobSpec.rootfs``), with those
                      below them.
    user_namespaces:  whether a job may make user namespaces of its own.
    """

    uid_range: tuple[int, int] = DEFAULT_UID_RANGE
    hidden_paths: tuple[str, ...] = DEFAULT_HIDDEN
    mount_sources: tuple[str, ...] = ()
    rootfs_dirs: tuple[str, ...] = ()
    user_namespaces: bool = False
    _sources: dict[str, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first, last = self.uid_range
        if not 1 <= first <= last <= 0x7FFFFFFF or last - first < 15:
            raise ValueError(
                f"uid_range must be FIRST-LAST within 1...2147483647 and hold at least 16 uids, "
                f"got {first}-{last}"
            )
        for name in ("hidden_paths", "rootfs_dirs"):
            for path in getattr(self, name):
                _absolute(path, name)
        sources = {}
        for entry in self.mount_sources:
            path, writable = (entry[:-3], True) if entry.endswith(":rw") else (entry, False)
            sources[_absolute(path, "mount_sources")] = writable
        object.__setattr__(self, "_sources", sources)

    def check_mount(self, mount: Mount, named_user: bool) -> Mount:
        """``mount`` with its source resolved on the host, if this sandbox allows it;
        InvalidSpec saying why not otherwise."""
        source = _existing(mount.source, "mount source")
        for allowed, writable in self._sources.items():
            if _within(source, os.path.realpath(allowed)):
                if mount.writable and not writable:
                    raise InvalidSpec(
                        f"mount source {mount.source!r} may only be mounted read-only here"
                    )
                if mount.writable and not named_user:
                    raise InvalidSpec(
                        "a writable mount needs --run-as a named user: files a job writes "
                        "must not belong to a uid of its own, which later jobs are given"
                    )
                return Mount(source, mount.target, mount.writable)
        allowed_list = ", ".join(self.mount_sources) or "none"
        raise InvalidSpec(f"mount source {mount.source!r} is not allowed here ({allowed_list})")

    def slot_settings(
        self, state_dir: Path, limits: Limits, clone_into_cgroup: bool
    ) -> SlotSettings:
        """How the launcher makes every slot for this sandbox (``state_dir`` hidden too)."""
        return SlotSettings(
            uid_first=self.uid_range[0],
            uid_last=self.uid_range[1],
            hidden=hidden((*self.hidden_paths, str(state_dir))),
            limits=limits,
            user_namespaces=self.user_namespaces,
            binds=bool(self.mount_sources or self.rootfs_dirs),
            clone_into_cgroup=clone_into_cgroup,
        )

    def check_rootfs(self, rootfs: str) -> str:
        """``rootfs`` resolved on the host, if this sandbox allows it; InvalidSpec otherwise."""
        path = _existing(rootfs, "rootfs")
        if not os.path.isdir(path):
            raise InvalidSpec(f"rootfs {rootfs!r} is not a directory")
        if not any(_within(path, os.path.realpath(d)) and path != "/" for d in self.rootfs_dirs):
            allowed = ", ".join(self.rootfs_dirs) or "none"
            raise InvalidSpec(f"rootfs {rootfs!r} is not allowed here ({allowed})")
        return path


def hidden(paths: Iterable[str]) -> tuple[str, ...]:
    """The paths to hide as the job sees them: symlinks resolved on the host (``/var/run`` is
    ``/run`` on most systems), the ones that do not exist dropped, each once."""
    resolved = dict.fromkeys(os.path.realpath(p) for p in paths if os.path.lexists(p))
    return tuple(p for p in resolved if p != "/")


def check_host(sandbox: Sandbox) -> None:
    """Refuse (WorkerError) a host where jobs cannot be sandboxed as ``sandbox`` says: no
    libseccomp to load, or a uid range that holds a user, group or subordinate id."""
    try:
        ctypes.CDLL(LIBSECCOMP)
    except OSError:
        raise WorkerError(
            f"{LIBSECCOMP} is missing: every job gets a seccomp filter made with libseccomp; "
            f"{LIBSECCOMP_HINT}"
        ) from None
    clashes = uid_range_clashes(sandbox.uid_range, ID_FILES)
    if clashes:
        first, last = sandbox.uid_range
        raise WorkerError(
            f"the jobs' uid range {first}-{last} holds ids already in use: "
            f"{'; '.join(clashes)}; choose a range no user, group or subordinate id uses "
            "(uid_range)"
        )


def uid_range_clashes(uid_range: tuple[int, int], files: Iterable[str]) -> list[str]:
    """Where an id of ``files`` (passwd, group: field 3; subuid, subgid: ranges) falls in
    ``uid_range``."""
    first, last = uid_range
    found = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        subordinate = path.endswith(("subuid", "subgid"))
        for line in lines:
            parts = line.split(":")
            try:
                start, count = (int(parts[1]), int(parts[2])) if subordinate else (int(parts[2]), 1)
            except (IndexError, ValueError):
                continue
            if start <= last and first <= start + count - 1:
                found.append(f"{path}: {parts[0]} ({line.strip()})")
    return found


def _absolute(path: str, name: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ValueError(f"{name} must hold absolute paths, got {path!r}")
    return path


def _existing(path: str, what: str) -> str:
    if not os.path.lexists(path):
        raise InvalidSpec(f"{what} {path!r} does not exist on the server")
    return os.path.realpath(path)


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


DEFAULT_SANDBOX = Sandbox()
