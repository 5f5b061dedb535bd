"""Sizes and durations as operators write them: ``256M``, ``1.5G``, ``30s``, ``1h30m``, ``7d``.

Sizes are binary: K = 1024 bytes, M = 1024 K, and so on (``M``, ``MB``, ``MiB`` and ``m`` all
mean the same), as in ``docker run --memory`` and systemd's MemoryMax. A bare number is bytes,
or seconds.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(text: str | int | float) -> int:
    """Bytes from ``512``, ``256M``, ``1.5GiB``...; ValueError says what is accepted."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not 0 <= text < float("inf"):
            raise ValueError(f"a size must be >= 0 and finite, got {text}")
        return int(text)
    match = _SIZE.match(str(text))
    if match is None:
        raise ValueError(
            f"{text!r} is not a size; write bytes or a number with K, M, G or T "
            "(powers of 1024), e.g. 256M"
        )
    number, unit = match.groups()
    return int(float(number) * 1024 ** _POWERS[(unit or "").lower()])


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``30``, ``30s``, ``500ms``, ``1h30m``, ``7d``; ValueError if malformed."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spec = str(text).replace(" ", "")
        parts = _DURATION_PART.findall(spec)
        if _NUMBER.match(spec):
            seconds = float(spec)
        elif parts and "".join(n + u for n, u in parts) == spec:
            seconds = sum(float(number) * _SECONDS[unit.lower()] for number, unit in parts)
        else:
            raise ValueError(
                f"{text!r} is not a duration; write seconds or a number with ms, s, m, h or d, "
                "e.g. 30s, 5m, 1h30m"
            )
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"a duration must be >= 0 and finite, got {text}")
    return seconds


def format_size(count: int) -> str:
    """A size as parse_size reads it, exact: ``512M``, ``1G``, ``1536`` (bytes)."""
    for unit, power in sorted(_POWERS.items(), key=lambda item: -item[1]):
        if power and count and count % 1024**power == 0:
            return f"{count // 1024**power}{unit.upper()}"
    return str(count)


def format_duration(seconds: float) -> str:
    """A duration as parse_duration reads it: ``5s``, ``30d``, ``0.5s``."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _SECONDS[unit] == 0:
            return f"{seconds / _SECONDS[unit]:g}{unit}"
    return f"{seconds:g}s"


def human_bytes(count: float) -> str:
    """A byte count for people to read: ``812 B``, ``2.4 MiB``."""
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if count < 1024 or unit == "GiB":
            break
    return f"{count:.1f} {unit}"
