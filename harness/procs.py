"""What /proc says about a process: whether it lives, what it holds, what its argv carries."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def marked_processes(marker: str) -> list[int]:
    """PIDs of the live processes (this one aside) whose command line contains ``marker``."""
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (of its main thread), oldest first."""
    return [int(word) for word in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def ns_pids(pid: int) -> list[int]:
    """``pid`` in each PID namespace it is in, the host's first (the NSpid line)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(word) for word in line.split()[1:]]
    raise ValueError(f"/proc/{pid}/status has no NSpid line")


@dataclass(frozen=True)
class Usage:
    """What a process holds."""

    fds: int
    threads: int
    rss_bytes: int


def usage(pid: int) -> Usage:
    """Open fds, threads and resident memory of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return Usage(
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=len(os.listdir(f"/proc/{pid}/task")),
        rss_bytes=rss,
    )
