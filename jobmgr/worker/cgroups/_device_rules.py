"""Which devices a job may open, make or write: those of the minimal /dev of its view
(_sandbox.c) and nothing else, whatever device nodes it finds or makes.

cgroup v1 takes the list as ``devices.deny``/``devices.allow`` lines; cgroup v2 has no file
for it and takes a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the job's cgroup
(_device_bpf.py). The kernel asks both on every open and mknod of a device node.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """A character (``c``) or block (``b``) device; ``minor`` None: every minor."""

    kind: str
    major: int
    minor: int | None
    name: str

    def v1_rule(self) -> str:
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.kind} {self.major}:{minor} rwm"


JOB_DEVICES = (
    Device("c", 1, 3, "null"),
    Device("c", 1, 5, "zero"),
    Device("c", 1, 7, "full"),
    Device("c", 1, 8, "random"),
    Device("c", 1, 9, "urandom"),
    Device("c", 5, 0, "tty"),
    Device("c", 5, 2, "ptmx"),
    Device("c", 136, None, "pts/*"),  # the job's own devpts instance
)
