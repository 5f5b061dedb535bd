"""A job slot as the launcher tracks it: a warm init waiting in its cgroup, and once given an
order, the job running in it. Also the order's wire format (what _pid1.c parses)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._capture import LogWriter
from ._protocol import Message
from ._status import Stream
from .cgroups import JobCgroup


@dataclass
class Slot:
    """A slot: a warm init waiting in its cgroup, and once given an order, the job in it."""

    id: str
    cgroup: JobCgroup
    pipes: dict[int, Stream]
    report_fd: int | None
    order_fd: int | None
    ready: bool = False
    assigned: bool = False
    path: Path | None = None  # its spare file while it warms, then the job's log
    log_fd: int | None = None  # that file, until ``log`` takes it over
    log: LogWriter | None = None
    start_req: int | None = None
    started_at: float = 0.0
    report_buf: bytes = b""
    launched: bool = False
    launch_failed: bool = False
    init_pid: int | None = None
    init_status: int | None = None
    job_status: int | None = None
    stop_requested: bool = False
    reason: str = ""
    stop_reqs: list[int] = field(default_factory=list)
    grace: float = 5.0  # for a stop on timeout
    record: dict[str, Any] = field(default_factory=dict)  # what the log's record frame says

    @property
    def size(self) -> int:
        return self.log.size if self.log is not None else 0


def encode_order(req: Message) -> bytes:
    """The order the init reads (see _pid1.c): NUL-terminated uid gid cwd argc argv envc env.

    Strings carrying surrogate escapes become the exact bytes they stand for.
    """
    argv: list[str] = req["argv"]
    env = [f"{key}={value}" for key, value in req["env"].items()]
    uid, gid = req.get("uid"), req.get("gid")
    fields = [
        "" if uid is None else str(uid),
        "" if gid is None else str(gid),
        req.get("cwd") or "/",
        str(len(argv)),
        *argv,
        str(len(env)),
        *env,
    ]
    return b"".join(os.fsencode(item) + b"\0" for item in fields)
