"""What booting the test VM needs on the host, and the Debian package that provides each.

Everything comes from Debian (apt) or PyPI (virtme-ng, an extra of the project): nothing is
downloaded from anywhere else.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Need:
    """One thing the run needs: how to tell it is there, and where it comes from."""

    what: str
    present: Callable[[], bool]
    debian_package: str


def vng_path() -> str:
    """virtme-ng's ``vng``, installed into this interpreter's environment (the ``vm`` extra)."""
    return os.path.join(os.path.dirname(sys.executable), "vng")


def kernels() -> list[str]:
    """Installed distribution kernels, newest last."""
    return sorted(glob.glob("/boot/vmlinuz-*"), key=_version_key)


def _version_key(path: str) -> list[int | str]:
    release = os.path.basename(path).removeprefix("vmlinuz-")
    return [int(p) if p.isdigit() else p for p in release.replace("-", ".").split(".")]


NEEDS = (
    Need(
        "qemu-system-x86_64",
        lambda: shutil.which("qemu-system-x86_64") is not None,
        "qemu-system-x86",
    ),
    Need("a kernel in /boot (vmlinuz-*)", lambda: bool(kernels()), "linux-image-amd64"),
    # vng builds the guest's initramfs from a static busybox.
    Need("busybox", lambda: shutil.which("busybox") is not None, "busybox-static"),
    # The guest formats the scratch disk with the host's mkfs (the guest runs the host's root).
    Need("mkfs.ext4", lambda: shutil.which("mkfs.ext4") is not None, "e2fsprogs"),
)


def missing() -> list[Need]:
    """The needs not met on this host."""
    return [need for need in NEEDS if not need.present()]


def install_missing() -> None:
    """Install the Debian packages of every missing need (as root, apt-get update first).

    Raises SystemExit naming the packages when this is not a Debian-like host or not root.
    """
    lacking = missing()
    if not lacking:
        return
    packages = sorted({need.debian_package for need in lacking})
    wanted = ", ".join(need.what for need in lacking)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(
            f"the test VM needs {wanted}: install the Debian packages {' '.join(packages)} "
            "(as root: apt-get install ...)"
        )
    print(f"vm: installing {' '.join(packages)} (for {wanted})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )
    still = missing()
    if still:
        raise SystemExit(f"still missing after apt-get: {', '.join(n.what for n in still)}")
