"""The launcher's end of its connection to the server: one server at a time, never blocking.

Messages to a server that is slow to read queue here, so no job waits on it; when the server
goes away the queue is dropped (everything that matters is on disk) and the next one may
connect.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from typing import Any

from ._shim import (
    Event,
    FrameDecoder,
    LauncherBusy,
    ProtocolError,
    Reply,
    RequestFailed,
    encode_event,
    encode_reply,
)


class ServerChannel:
    """Accepts the server on ``listener`` and hands each frame it sends to ``on_frame``."""

    def __init__(
        self,
        sel: selectors.BaseSelector,
        listener: socket.socket,
        on_frame: Callable[[dict[str, Any]], None],
    ) -> None:
        self._sel = sel
        self._on_frame = on_frame
        self._conn: socket.socket | None = None
        self._decoder = FrameDecoder()
        self._outbox = bytearray()
        sel.register(listener, selectors.EVENT_READ, lambda _: self._accept(listener))

    def send_reply(self, req: int, reply: Reply | RequestFailed) -> None:
        """Queue the answer to request ``req`` for the server, if one is connected."""
        if self._conn is not None:
            self._outbox += encode_reply(req, reply)

    def send_event(self, event: Event) -> None:
        """Queue ``event`` for the server, if one is connected."""
        if self._conn is not None:
            self._outbox += encode_event(event)

    def flush(self, blocking: bool = False) -> None:
        """Send what is queued, as far as the socket takes it now (or all, if ``blocking``)."""
        if self._conn is None:
            return
        if blocking:
            self._conn.setblocking(True)
        try:
            while self._outbox:
                sent = self._conn.send(self._outbox)
                del self._outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop()
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outbox else 0)
        self._sel.modify(self._conn, events, self._on_ready)

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        if self._conn is not None:
            conn.sendall(encode_event(LauncherBusy()))  # one server per state dir at a time
            conn.close()
            return
        conn.setblocking(False)
        self._conn = conn
        self._decoder = FrameDecoder()
        self._outbox.clear()
        self._sel.register(conn, selectors.EVENT_READ, self._on_ready)

    def _on_ready(self, mask: int) -> None:
        assert self._conn is not None
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if not mask & selectors.EVENT_READ or self._conn is None:
            return
        try:
            data = self._conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop()
            return
        try:
            frames = self._decoder.feed(data)
        except ProtocolError:
            self._drop()  # no way to find the next frame: this connection is done
            raise
        for fields in frames:
            self._on_frame(fields)

    def _drop(self) -> None:
        if self._conn is not None:
            self._sel.unregister(self._conn)
            self._conn.close()
            self._conn = None
            self._outbox.clear()
