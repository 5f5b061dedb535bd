"""The files: written atomically with their modes, and the starter set of ``jobmgr-certs``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ._certs import DEFAULT_DAYS, DEFAULT_HOSTS, SERVER_ORGANIZATION, Issued, issue, make_ca

# Client certificates `jobmgr-certs` writes: file stem -> (Subject O = role, Subject CN).
CLIENTS = {
    "client_admin": ("admin", "client_admin"),
    "client_user": ("user", "client_user"),
}
FILE_STEMS = ("ca", "server", *CLIENTS)


class ExistingFiles(FileExistsError):
    """Some of the files to write are already there."""


def write_bundle(
    out_dir: str | Path,
    *,
    force: bool = False,
    extra_hosts: Iterable[str] = (),
    days: int = DEFAULT_DAYS,
    ca_only: bool = False,
) -> list[Path]:
    """Write ca, server and client certificates and keys (``FILE_STEMS``) into ``out_dir``,
    or only the CA's with ``ca_only``.

    Raises ExistingFiles, and writes nothing, if any of them exists, unless ``force``.
    Returns the paths written.
    """
    out = Path(out_dir)
    paths = bundle_paths(out, ca_only=ca_only)
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise ExistingFiles(", ".join(str(p) for p in existing))
    make_dirs(out)
    ca = make_ca(days=days)
    if ca_only:
        write_pair(out / "ca.pem", out / "ca.key", ca)
        return paths
    hosts = list(dict.fromkeys([*DEFAULT_HOSTS, *extra_hosts]))
    bundle = {
        "ca": ca,
        "server": issue(
            ca,
            purpose="server",
            common_name="jobmgr-server",
            organizations=[SERVER_ORGANIZATION],
            hosts=hosts,
            days=days,
        ),
    }
    for stem, (role, common_name) in CLIENTS.items():
        bundle[stem] = issue(
            ca,
            purpose="client",
            common_name=common_name,
            organizations=[role],
            days=days,
        )
    for stem, issued in bundle.items():
        write_pair(out / f"{stem}.pem", out / f"{stem}.key", issued)
    return paths


def bundle_paths(out: Path, *, ca_only: bool = False) -> list[Path]:
    """The files ``write_bundle`` writes into ``out``."""
    stems = ("ca",) if ca_only else FILE_STEMS
    return [out / f"{stem}.{ext}" for stem in stems for ext in ("pem", "key")]


def write_pair(cert_path: Path, key_path: Path, issued: Issued) -> None:
    """Write a certificate (0644) and its key (0600), the key first: a certificate is never
    left without its key."""
    write_file(key_path, issued.key_pem, mode=0o600)
    write_file(cert_path, issued.cert_pem, mode=0o644)


def make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, none of them writable by group or others,
    whatever the umask: whoever may write a directory may swap the CA certificate or a key in
    it for their own."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, stat.S_IMODE(directory.stat().st_mode) & ~0o022)


def write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` (never wider, whatever
    the umask), replacing any file there."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
