"""The launcher's end of its connection to the server: one server at a time, never blocking.

Messages to a server that is slow to read queue here, so no job waits on it; when the server
goes away the queue is dropped (everything that matters is on disk) and the next one may
connect. A message may carry file descriptors (see _fdpass): they are duplicated when it is
queued, so the caller may close its own at once, and ride with the message's first byte.
"""

from __future__ import annotations

import os
import selectors
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._fdpass import FdQueue, close_all, receive, rights
from ._shim import (
    Event,
    FrameDecoder,
    LauncherBusy,
    ProtocolError,
    Reply,
    RequestFailed,
    encode_event,
    encode_reply,
    fd_count,
)


@dataclass
class _Segment:
    """Queued bytes; ``fds`` (owned here) go with the first of them."""

    data: bytearray
    fds: list[int] = field(default_factory=list)


class ServerChannel:
    """Accepts the server on ``listener`` and hands each frame it sends, with the descriptors
    that came with it, to ``on_frame``."""

    def __init__(
        self,
        sel: selectors.BaseSelector,
        listener: socket.socket,
        on_frame: Callable[[dict[str, Any], list[int]], None],
    ) -> None:
        self._sel = sel
        self._on_frame = on_frame
        self._conn: socket.socket | None = None
        self._decoder = FrameDecoder()
        self._received = FdQueue()
        self._outbox: deque[_Segment] = deque()
        self._events = 0  # what the selector watches the connection for
        sel.register(listener, selectors.EVENT_READ, lambda _: self._accept(listener))

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def send_reply(self, req: int, reply: Reply | RequestFailed) -> None:
        """Send the answer to request ``req`` to the server, if one is connected: at once (as
        far as the socket takes it), since a caller waits for it; queued until the loop's turn
        ends, it would wait for whatever else that turn holds (other slots' reports, a job's
        end with its cgroups removed, the warm pool's refill)."""
        if self._conn is not None:
            self._queue(encode_reply(req, reply), [])
            self.flush()

    def send_event(self, event: Event, fds: list[int] | None = None) -> None:
        """Queue ``event`` (with copies of ``fds``) for the server, if one is connected.
        OSError (out of descriptors) if the copies cannot be made: nothing is queued."""
        if self._conn is not None:
            copies: list[int] = []
            try:
                for fd in fds or []:
                    copies.append(os.dup(fd))
            except OSError:
                close_all(copies)
                raise
            self._queue(encode_event(event, len(copies)), copies)

    def _queue(self, data: bytes, fds: list[int]) -> None:
        if fds or not self._outbox:
            self._outbox.append(_Segment(bytearray(data), fds))
        else:
            self._outbox[-1].data += data

    def flush(self, blocking: bool = False) -> None:
        """Send what is queued, as far as the socket takes it now (or all, if ``blocking``)."""
        if self._conn is None:
            return
        if blocking:
            self._conn.setblocking(True)
        try:
            while self._outbox:
                segment = self._outbox[0]
                if segment.fds:
                    sent = self._conn.sendmsg([segment.data], rights(segment.fds))
                    close_all(segment.fds)
                    segment.fds = []
                else:
                    sent = self._conn.send(segment.data)
                del segment.data[:sent]
                if not segment.data:
                    self._outbox.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop()
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outbox else 0)
        if events != self._events:
            self._sel.modify(self._conn, events, self._on_ready)
            self._events = events

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        if self._conn is not None:
            conn.sendall(encode_event(LauncherBusy()))  # one server per state dir at a time
            conn.close()
            return
        conn.setblocking(False)
        self._conn = conn
        self._decoder = FrameDecoder()
        self._clear_outbox()
        self._sel.register(conn, selectors.EVENT_READ, self._on_ready)
        self._events = selectors.EVENT_READ

    def _on_ready(self, mask: int) -> None:
        assert self._conn is not None
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if not mask & selectors.EVENT_READ or self._conn is None:
            return
        try:
            data, fds = receive(self._conn, 1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except ProtocolError:
            self._drop()
            raise
        except OSError:
            data, fds = b"", []
        self._received.add(fds)
        if not data:
            self._drop()
            return
        try:
            frames = [(fields, self._received.take(fd_count(fields))) for fields in
                      self._decoder.feed(data)]
        except ProtocolError:
            self._drop()  # no way to find the next frame: this connection is done
            raise
        for fields, frame_fds in frames:
            self._on_frame(fields, frame_fds)

    def _drop(self) -> None:
        if self._conn is not None:
            self._sel.unregister(self._conn)
            self._conn.close()
            self._conn = None
            self._clear_outbox()
            self._received.close()

    def _clear_outbox(self) -> None:
        while self._outbox:
            close_all(self._outbox.popleft().fds)
