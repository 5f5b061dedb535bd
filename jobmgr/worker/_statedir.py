"""The state directory is the server's alone: the directory and every directory in it 0700,
every file 0600, all owned by the server's user.

Jobs run on the same host: a state file readable by others hands every job's argv, owner and
output to any job. Modes a previous version or an operator left too open are repaired at start;
what cannot be repaired (another owner, a link that could point anywhere) refuses the start,
naming the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ._errors import WorkerError

DIR_MODE = 0o700
FILE_MODE = 0o600


class UnsafeStateDir(WorkerError):
    """The state directory holds something only its owner may fix; the message names it."""


def make_private(state_dir: Path) -> None:
    """Create ``state_dir`` if needed, then make it and everything in it private."""
    state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    owner = os.geteuid()
    _secure(state_dir, os.lstat(state_dir), owner)
    pending = [state_dir]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                _secure(Path(entry.path), st, owner)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(Path(entry.path))


def _secure(path: Path, st: os.stat_result, owner: int) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeStateDir(
            f"{path} is a symbolic link: the state directory holds only jobmgr's own files "
            "(remove it, or choose another state directory)"
        )
    if st.st_uid != owner:
        raise UnsafeStateDir(
            f"{path} belongs to uid {st.st_uid}, not to the server's user (uid {owner}): "
            f"another user could read or change job records (chown -R {owner} the state "
            "directory, or choose another one)"
        )
    if stat.S_ISDIR(st.st_mode):
        wanted = DIR_MODE
    elif stat.S_ISREG(st.st_mode) or stat.S_ISSOCK(st.st_mode):
        wanted = FILE_MODE
    else:
        raise UnsafeStateDir(
            f"{path} is neither a file nor a directory: the state directory holds only "
            "jobmgr's own files (remove it, or choose another state directory)"
        )
    if stat.S_IMODE(st.st_mode) != wanted:
        os.chmod(path, wanted)  # not a link (checked above); only we can enter the dir


def private_file(path: Path) -> int:
    """Open ``path`` for appending, created 0600 if new (whatever the umask); its fd."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for binding or connecting the unix socket ``path`` that fits in
    sockaddr_un (107 bytes) however deep ``path`` is: its directory through a descriptor, in
    /proc/self/fd, which the kernel follows to the directory itself."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
