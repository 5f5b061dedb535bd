"""The host side of features/confinement.feature: what a scenario sets up for a job to attack
(a directory under /var/lib, a listening service, a setuid program, a root filesystem) and what
it looks at afterwards (markers, shared memory, free space). Everything made is removed with
the scenario.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.pki import ScenarioPKI, ServerFiles
from harness.server import ServerProgram, Started

MiB = 1024 * 1024
# Where a job's writes would land on the host if its view leaked; searched for markers.
MARKER_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/etc", "/usr", "/")
UID_RANGE = (1879048192, 1879113727)


@pytest.fixture
def var_lib_place(scenario_marker: str) -> Iterator[Path]:
    """A directory of the scenario's under /var/lib: a place jobs see, unlike /tmp (theirs)
    and /run (hidden)."""
    place = Path("/var/lib") / f"{scenario_marker}"
    place.mkdir(mode=0o755)
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


Launch = Callable[..., ServerProgram]


@pytest.fixture
def launch_in_place(
    var_lib_place: Path, scenario_pki: ScenarioPKI, server_cgroup_parent: str, scenario_marker: str
) -> Iterator[Launch]:
    """Starts jobmgr-server with its state directory and certificates (and the CA's key, as
    jobmgr-certs leaves it) in var_lib_place, where a job would see them; after the scenario
    each must stop cleanly and leave nothing (no launcher, cgroup or job process)."""
    servers = Started()

    def launch(*flags: str, ca_key: bytes = b"") -> ServerProgram:
        certs = var_lib_place / "certs"
        certs.mkdir(mode=0o700)
        (certs / "ca.pem").write_bytes(scenario_pki.ca_pem)
        (certs / "server.pem").write_bytes(scenario_pki.server.cert_pem)
        for name, pem in (("server.key", scenario_pki.server.key_pem), ("ca.key", ca_key)):
            fd = os.open(certs / name, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, pem)
            os.close(fd)
        return servers.start(
            ServerProgram(
                scenario_pki, ServerFiles.in_dir(certs), var_lib_place,
                f"{server_cgroup_parent}-{len(servers)}", *flags, marker=scenario_marker,
            )
        )  # fmt: skip

    yield launch
    servers.shut_down()


def markers_on_host(marker: str) -> list[str]:
    """Entries directly in MARKER_DIRS whose name holds ``marker``."""
    found = []
    for directory in MARKER_DIRS:
        try:
            found += [os.path.join(directory, n) for n in os.listdir(directory) if marker in n]
        except OSError:
            continue
    return found


def remove_markers(marker: str, scratch_existed: bool) -> None:
    """Remove whatever a job left on the host under a name holding ``marker``, as it would on
    a server that does not confine it (and the /scratch it made there)."""
    for path in [*markers_on_host(marker), *_scratch_markers(marker)]:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)
    if not scratch_existed:
        try:
            os.rmdir("/scratch")
        except OSError:
            pass


def _scratch_markers(marker: str) -> list[str]:
    try:
        return [f"/scratch/{name}" for name in os.listdir("/scratch") if marker in name]
    except OSError:
        return []


def shm_used() -> int:
    """Bytes in use on the host's /dev/shm."""
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def root_free() -> int:
    """Bytes free on the host's root filesystem (where /tmp and /var/tmp are here)."""
    st = os.statvfs("/")
    return st.f_bavail * st.f_frsize


@dataclass
class Service:
    """Unix sockets a host service listens on (mode 0777, so permissions stop no one), and
    how many connections it has accepted."""

    paths: list[str]
    abstract: str
    accepted: int = 0
    _sockets: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        for address in (*self.paths, "\0" + self.abstract):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(address)
            if not address.startswith("\0"):
                os.chmod(address, 0o777)
            sock.listen(8)
            sock.settimeout(0.1)
            self._sockets.append(sock)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for sock in self._sockets:
            sock.close()
        for path in self.paths:
            Path(path).unlink(missing_ok=True)


def setuid_copy(directory: Path, program: str) -> Path:
    """A copy of ``program`` owned by root with the setuid bit, in ``directory``."""
    target = directory / f"setuid-{Path(program).name}"
    shutil.copy(shutil.which(program) or program, target)
    os.chown(target, 0, 0)
    os.chmod(target, 0o4755)
    assert target.stat().st_mode & stat.S_ISUID
    return target


BUSYBOX_LINKS = ("sh", "cat", "ls", "id", "touch", "echo", "mkdir")


def busybox_tree(root: Path) -> Path:
    """A minimal root filesystem: busybox and its links, an os-release of its own, and empty
    directories where a job's view puts its own."""
    busybox = shutil.which("busybox")
    assert busybox is not None, "busybox (busybox-static) is needed for the root filesystem"
    for name in ("bin", "etc", "usr", "dev", "proc", "sys", "tmp"):
        (root / name).mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for link in BUSYBOX_LINKS:
        (root / "bin" / link).symlink_to("busybox")
    (root / "etc" / "os-release").write_text('NAME="jobmgr test root"\nID=jobmgr-test\n')
    return root
