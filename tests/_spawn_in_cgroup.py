"""Run a command placed in a cgroup through its ``procs_files``, as the launcher's child does.

A fresh interpreter writes its pid into each file and then execs the command, so the tests
never fork the (threaded) pytest process to run Python in the child.

    python -m tests._spawn_in_cgroup v1 NAME '{"cpu": "/sys/fs/cgroup/cpu/p/NAME", ...}' ARGV...
    python -m tests._spawn_in_cgroup v2 NAME /path/to/cgroup ARGV...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from jobmgr.worker.cgroups import v1, v2


def spawn(cgroup: v1.Cgroup | v2.Cgroup, *argv: str) -> subprocess.Popen[bytes]:
    """Start ``argv`` already inside ``cgroup``; returns once it has joined it."""
    where = json.dumps(cgroup.dirs) if isinstance(cgroup, v1.Cgroup) else cgroup.path
    version = "v1" if isinstance(cgroup, v1.Cgroup) else "v2"
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._spawn_in_cgroup", version, cgroup.name, where, *argv],
        pass_fds=[write_fd],
        env={**os.environ, "SPAWN_READY_FD": str(write_fd)},
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        ready.read()  # EOF once the child has exec'd (the fd is closed on exec)
    return proc


def main() -> None:
    version, name, where, *argv = sys.argv[1:]
    cgroup = v1.Cgroup(name, json.loads(where)) if version == "v1" else v2.Cgroup(name, where)
    for path in cgroup.procs_files:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    ready_fd = int(os.environ.pop("SPAWN_READY_FD"))
    os.set_inheritable(ready_fd, False)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
