"""Starts that are safe to send again: a start that carries a request id is known by its owner
and that id, while it is under way and, once it started a job, through the job table, so a
start sent again with the same pair gets the first one's job instead of starting a second."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from ._jobtable import JobTable
from ._shim import RequestFailed, StartReply

StartKey = tuple[str, str]  # (owner, request id)
StartFuture = Future[StartReply | RequestFailed]


class RetriedStarts:
    """The starts under way by (owner, request id), and the job table for those that ended."""

    def __init__(self, table: JobTable) -> None:
        self._table = table
        self._lock = threading.Lock()
        self._under_way: dict[StartKey, StartFuture] = {}

    def earlier(self, key: StartKey) -> StartFuture | None:
        """The start ``key`` names, if one was made before: the one still under way, or a
        future already holding its job."""
        with self._lock:
            under_way = self._under_way.get(key)
        if under_way is not None and not under_way.done():
            return under_way
        entry = self._table.by_request(*key)
        if entry is None:
            return None
        done: StartFuture = Future()
        done.set_result(StartReply(entry.status.id, entry.status.started_at))
        return done

    def track(self, key: StartKey, fut: StartFuture) -> None:
        """Know ``fut`` as the start ``key`` until it is answered."""
        with self._lock:
            self._under_way[key] = fut
        fut.add_done_callback(lambda _: self._forget(key, fut))

    def _forget(self, key: StartKey, fut: StartFuture) -> None:
        with self._lock:
            if self._under_way.get(key) is fut:
                del self._under_way[key]
