"""Which block devices get the per-job read/write throttles.

Throttles are set per whole disk (the kernel throttles at the disk's request queue, not per
partition): the disk holding ``/`` plus every other real disk of the machine. Both answers are
computed once per process; disks do not come and go under a running worker often enough to
justify rescanning sysfs for every job.
"""

from __future__ import annotations

import functools
import os

SYS_BLOCK = "/sys/block"
SYS_DEV_BLOCK = "/sys/dev/block"

# RAM-backed or file-backed devices: their I/O is memory traffic (zram is the swap device on some
# machines) or is already counted on the disk underneath (loop), so throttling them is pointless.
SKIPPED_PREFIXES = ("loop", "ram", "zram")

Device = tuple[int, int]


@functools.cache
def root_device() -> Device | None:
    """The whole disk backing ``/``; None when ``/`` is not on a block device (tmpfs, overlay)."""
    return disk_holding("/")


def disk_holding(path: str) -> Device | None:
    """The whole disk backing the filesystem ``path`` is on; None when that filesystem is not
    on a block device (tmpfs, overlay, 9p)."""
    st_dev = os.stat(path).st_dev
    return _whole_disk(os.major(st_dev), os.minor(st_dev))


def throttle_devices() -> list[Device]:
    """Whole-disk ``(major, minor)`` pairs to throttle, the root filesystem's disk first."""
    return list(_throttle_devices())


@functools.cache
def _throttle_devices() -> tuple[Device, ...]:
    root = root_device()
    devices = [root] if root is not None else []
    for name in sorted(os.listdir(SYS_BLOCK)):
        if name.startswith(SKIPPED_PREFIXES) or _read(f"{SYS_BLOCK}/{name}/size") == "0":
            continue
        device = _parse_dev(_read(f"{SYS_BLOCK}/{name}/dev"))
        if device not in devices:
            devices.append(device)
    return tuple(devices)


def _whole_disk(major: int, minor: int) -> Device | None:
    node = f"{SYS_DEV_BLOCK}/{major}:{minor}"
    if not os.path.exists(node):
        return None
    if os.path.exists(f"{node}/partition"):
        # A partition's sysfs directory sits inside its disk's directory.
        disk = os.path.dirname(os.path.realpath(node))
        return _parse_dev(_read(f"{disk}/dev"))
    return (major, minor)


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def _parse_dev(text: str) -> Device:
    major, _, minor = text.partition(":")
    return (int(major), int(minor))
