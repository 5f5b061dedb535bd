"""What the server's processes weigh: its process tree, PSS and RSS from /proc."""

from __future__ import annotations

import os
from dataclasses import dataclass

KiB = 1024


@dataclass(frozen=True)
class Helpers:
    """The server and its helper processes, and the jobs' own commands (left out of costs).

    The tree is server -> launcher -> one init per job slot -> the job's command; the
    launcher's other children (a zygote that forks the inits, if it has one) count as
    helpers too. Every process but the commands (and what they start) is the price of
    running jobs.
    """

    server: int
    launcher: int | None
    inits: tuple[int, ...]
    commands: tuple[int, ...]

    @property
    def helpers(self) -> tuple[int, ...]:
        launcher = (self.launcher,) if self.launcher is not None else ()
        return (self.server, *launcher, *self.inits)


def children_map() -> dict[int, list[int]]:
    """PPID -> child PIDs of every process now alive."""
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def server_tree(server_pid: int) -> Helpers:
    """The server's process tree now; ``inits`` are all the launcher's children."""
    tree = children_map()
    launcher = next((pid for pid in tree.get(server_pid, []) if _is_launcher(pid)), None)
    inits = tuple(tree.get(launcher, [])) if launcher is not None else ()
    commands: list[int] = []
    todo = [child for init in inits for child in tree.get(init, [])]
    while todo:
        pid = todo.pop()
        commands.append(pid)
        todo += tree.get(pid, [])
    return Helpers(server_pid, launcher, inits, tuple(commands))


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (0 if it is gone)."""
    return _field(f"/proc/{pid}/smaps_rollup", b"Pss:")


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 if it is gone)."""
    return _field(f"/proc/{pid}/status", b"VmRSS:")


def helpers_pss(server_pid: int) -> tuple[int, Helpers]:
    """Summed PSS of the server and every helper process, and the tree it was read from."""
    tree = server_tree(server_pid)
    return sum(pss_bytes(pid) for pid in tree.helpers), tree


def _is_launcher(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"jobmgr.worker._launcher" in f.read()
    except OSError:
        return False


def _field(path: str, key: bytes) -> int:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * KiB
    except (OSError, ProcessLookupError):
        pass
    return 0
