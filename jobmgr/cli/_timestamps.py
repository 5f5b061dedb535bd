"""``output --timestamps`` and ``--since``: when the server captured each line.

Each line is prefixed with the capture time of the chunk its first byte came in, in RFC 3339
UTC with microseconds (``2026-01-02T15:04:05.123456Z``, fixed width, so it sorts as text),
and a space, as ``docker logs -t`` does. Lines of stdout and of stderr are told apart as the
job wrote them: each stream keeps its own line state. Output a server logged without capture
times (an older jobmgr-server) has none: its lines get ``-`` instead, said once on stderr.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from jobmgr.client._types import OutputChunk, Stream

NO_TIME = b"-"


def since(text: str) -> datetime:
    """An argparse type: a DURATION ago (``2s``, ``5m``, ``1h30m``) or an RFC 3339 time
    (``2026-01-02T15:04:05Z``; without a zone, local time)."""
    from ._units import parse_duration

    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30s, 5m, 1h30m) nor an RFC 3339 time "
            "(2026-01-02T15:04:05Z)"
        ) from None


def rfc3339(moment: datetime) -> bytes:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


class Stamper:
    """Prefixes every line of a stream's output with its capture time."""

    def __init__(self) -> None:
        self._at_line_start = {Stream.STDOUT: True, Stream.STDERR: True}
        self.untimed = False  # whether any output had no capture time

    def stamp(self, chunk: OutputChunk) -> bytes:
        if chunk.captured_at is None:
            self.untimed = True
        prefix = (NO_TIME if chunk.captured_at is None else rfc3339(chunk.captured_at)) + b" "
        pieces = chunk.data.split(b"\n")
        starts = self._at_line_start[chunk.stream]
        out = []
        for number, piece in enumerate(pieces):
            last = number == len(pieces) - 1
            begins = starts if number == 0 else True
            # A last empty piece is no line yet: the next chunk's bytes start it.
            out.append(prefix + piece if begins and not (last and not piece) else piece)
        if chunk.data:
            self._at_line_start[chunk.stream] = chunk.data.endswith(b"\n")
        return b"\n".join(out)
