"""Messages between the worker (in the server) and the launcher: length-prefixed JSON.

JSON keeps the launcher free of anything it would have to trust; strings that came from
non-UTF-8 bytes travel as surrogate escapes, which json round-trips exactly.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


class Decoder:
    """Turns a byte stream back into messages, however it was split."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        messages: list[Message] = []
        while len(self._buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buf)
            if length > MAX_MESSAGE:
                raise ValueError(f"message of {length} bytes exceeds the {MAX_MESSAGE} limit")
            if len(self._buf) < HEADER.size + length:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + length])
            del self._buf[: HEADER.size + length]
            messages.append(json.loads(body))
        return messages
