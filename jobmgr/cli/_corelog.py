"""gRPC core's own log lines, and anything else written to file descriptor 2, re-logged as
jobmgr records: escaped, one line each, and a few per source line and window.

gRPC core logs (through absl) straight to fd 2, and some of what it writes comes from the
peer before any certificate is checked: a TLS client's server name goes out raw in
``No match found for server name: ...``, newlines and escape sequences included. So while the
server runs, fd 2 is a pipe: a thread reads it, joins each absl record with its continuation
lines, and logs it to ``jobmgr.grpc`` at absl's severity (other text, such as a Python
traceback, to ``jobmgr.stderr``); the log handler writes to the real stderr. A flood of
failed handshakes, one core line each, becomes a few lines and a count (see ``_ratelog``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import select
import sys
import threading
from typing import TextIO

from jobmgr.api import LogThrottle

# I1202 02:42:29.330985   26213 ssl_transport_security.cc:2563] Handshake failed ...
_ABSL = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([^\] ]+:\d+)\] ?(.*)")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
# A record's continuation lines come in the same write; after this long without more, it is
# complete.
SETTLE = 0.05
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031

core_log = logging.getLogger("jobmgr.grpc")
stderr_log = logging.getLogger("jobmgr.stderr")


class StderrRelay:
    """Points fd 2 at a pipe and re-logs what arrives, until ``stop``."""

    def __init__(self) -> None:
        self._saved = -1
        self._read = -1
        self._thread: threading.Thread | None = None
        self._throttle = LogThrottle()
        self._pending: tuple[int, str, list[str]] | None = None  # level, source, lines

    def start(self) -> TextIO:
        """Redirect fd 2; returns a stream to the real stderr, for the log handler."""
        self._saved = os.dup(2)
        real = open(  # noqa: SIM115 - it lives as long as the process logs
            self._saved, "w", buffering=1, encoding="utf-8", errors="backslashreplace"
        )
        self._read, write = os.pipe()
        with contextlib.suppress(OSError):  # a bigger pipe rides out a burst of lines
            fcntl.fcntl(write, _F_SETPIPE_SZ, PIPE_BYTES)
        sys.stderr.flush()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._run, name="jobmgr-stderr", daemon=True)
        self._thread.start()
        return real

    def stop(self) -> None:
        """Give fd 2 back to the real stderr, after logging what is still in the pipe."""
        if self._thread is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # the pipe's last writer goes: the thread reads its end
        self._thread.join(5)
        os.close(self._read)
        self._thread = None

    def _run(self) -> None:
        partial = b""
        while True:
            ready, _, _ = select.select([self._read], [], [], SETTLE if self._pending else 1.0)
            if not ready:
                self._emit()
                self._summarize()
                continue
            chunk = os.read(self._read, 65536)
            if not chunk:
                break
            *lines, partial = (partial + chunk).split(b"\n")
            for line in lines:
                self._take(line.decode(errors="backslashreplace"))
        if partial:
            self._take(partial.decode(errors="backslashreplace"))
        self._emit()
        self._summarize()

    def _take(self, line: str) -> None:
        match = _ABSL.fullmatch(line)
        if match is None and self._pending is not None:
            self._pending[2].append(line)
            return
        self._emit()
        if match is None:
            self._pending = (logging.WARNING, "", [line])
        else:
            self._pending = (_LEVELS[match[1]], match[2], [match[3]])

    def _emit(self) -> None:
        if self._pending is None:
            return
        level, source, lines = self._pending
        self._pending = None
        held_back = self._throttle.admit(source or "stderr")
        if held_back is None:
            return
        fields: dict[str, object] = {"source": source} if source else {}
        if held_back:
            fields["not_logged"] = held_back
        logger = core_log if source else stderr_log
        logger.log(level, "\n".join(lines), extra={"fields": fields})

    def _summarize(self) -> None:
        for source, count in self._throttle.overdue():
            fields = {"source": source, "not_logged": count}
            core_log.info("lines not logged", extra={"fields": fields})
