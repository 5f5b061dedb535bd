"""Per-job cgroups: one interface, a cgroup v1 and a v2 implementation, chosen once.

``detect_driver("jobmgr")`` reads mountinfo and returns a ``CgroupDriver``; everything above it
works with ``CgroupDriver`` and ``JobCgroup`` and never asks which version it got.
"""

from ._base import CgroupDriver, CgroupStats, JobCgroup
from ._device_rules import JOB_DEVICES, Device
from ._kernfs import CgroupError
from ._mounts import CgroupsUnavailable, detect_driver

__all__ = [
    "JOB_DEVICES",
    "CgroupDriver",
    "CgroupError",
    "CgroupStats",
    "CgroupsUnavailable",
    "Device",
    "JobCgroup",
    "detect_driver",
]
