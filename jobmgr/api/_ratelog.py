"""Log lines a flood cannot multiply: at most a few per key and window, the rest counted.

A refused connection or call is worth one line to the operator, but an attacker decides how
many there are. ``LogThrottle`` lets ``burst`` lines per key through in each ``window``;
the lines it holds back are counted, and the count is said on the next line let through for
that key, or by ``overdue()`` once the window has passed without one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

DEFAULT_BURST = 5
DEFAULT_WINDOW = 10.0


@dataclass
class _Window:
    began: float
    logged: int = 0
    held_back: int = 0


class LogThrottle:
    """Decides, per key, which lines of a flood are written. Thread-safe."""

    def __init__(
        self,
        burst: int = DEFAULT_BURST,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.window = burst, window
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> int | None:
        """None if this line is to be held back (it is counted); otherwise the number held
        back for ``key`` since its last line, for that line to mention."""
        now = self._clock()
        with self._lock:
            current = self._windows.get(key)
            if current is None or now - current.began >= self.window:
                held = current.held_back if current is not None else 0
                self._windows[key] = _Window(began=now, logged=1)
                return held
            if current.logged < self.burst:
                current.logged += 1
                held, current.held_back = current.held_back, 0
                return held
            current.held_back += 1
            return None

    def holding(self) -> bool:
        """Whether any key has lines held back that no line has mentioned yet."""
        with self._lock:
            return any(w.held_back for w in self._windows.values())

    def overdue(self) -> list[tuple[Hashable, int]]:
        """Keys whose window has passed with lines held back, and how many: the caller logs
        one summary line for each. Their counts start again from zero."""
        now = self._clock()
        with self._lock:
            due = [
                (key, w.held_back)
                for key, w in self._windows.items()
                if w.held_back and now - w.began >= self.window
            ]
            for key, _ in due:
                del self._windows[key]
            # Quiet keys are forgotten, so the table stays as small as the flood is varied.
            for key in [k for k, w in self._windows.items() if now - w.began >= self.window]:
                del self._windows[key]
        return due
