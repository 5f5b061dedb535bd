"""gRPC calls made by hand: TLS with Python's ``ssl``, HTTP/2 frames written byte by byte.

For the clients no library would let us be: one that offers only an old TLS version, one
with a certificate the server must refuse, one that opens an Output stream and then never
reads another byte, one that vanishes mid-stream without a word.
"""

from __future__ import annotations

import socket
import ssl
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE = 0x2, 0x4
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535


@dataclass(frozen=True)
class ClientTLS:
    """What a raw client presents: a CA to trust and, maybe, a certificate and key."""

    ca_path: Path
    cert_path: Path | None = None
    key_path: Path | None = None
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.minimum < ssl.TLSVersion.TLSv1_3:
            # OpenSSL 3 will not offer TLS 1.0/1.1 (nor their ciphers) at its default security
            # level; level 0 makes this client really offer what it is told to.
            context.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1, on purpose
            context.minimum_version = self.minimum
            context.maximum_version = self.maximum
        context.set_alpn_protocols(["h2"])
        context.load_verify_locations(self.ca_path)
        if self.cert_path is not None and self.key_path is not None:
            context.load_cert_chain(self.cert_path, self.key_path)
        return context


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack("!I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack("!I", stream)
        + payload
    )


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out, value = bytearray([first | top]), value - top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(headers: list[tuple[str, str]]) -> bytes:
    """Headers as HPACK literals without indexing and without Huffman: plain to write."""
    out = bytearray()
    for name, value in headers:
        out += b"\x00"
        for text in (name.encode(), value.encode()):
            out += _hpack_int(len(text), 7) + text
    return bytes(out)


def grpc_message(payload: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return b"\x00" + struct.pack("!I", len(payload)) + payload


class RawCall:
    """One gRPC call on a connection of its own, driven frame by frame."""

    def __init__(self, port: int, tls: ClientTLS, *, window: int = DEFAULT_WINDOW) -> None:
        self._window = window
        raw = socket.create_connection(("localhost", port), timeout=10)
        try:
            self.sock = tls.context().wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.version = self.sock.version()
        self._buf = b""

    def send_call(self, method: str, request: bytes) -> None:
        """Open HTTP/2 with our window settings and send one call on stream 1."""
        settings = struct.pack("!HI", SETTINGS_ENABLE_PUSH, 0) + struct.pack(
            "!HI", SETTINGS_INITIAL_WINDOW_SIZE, self._window
        )
        headers = hpack_literal(
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", method),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        out = PREFACE + frame(SETTINGS, 0, 0, settings)
        if self._window > DEFAULT_WINDOW:
            out += frame(WINDOW_UPDATE, 0, 0, struct.pack("!I", self._window - DEFAULT_WINDOW))
        out += frame(HEADERS, END_HEADERS, 1, headers)
        out += frame(DATA, END_STREAM, 1, grpc_message(request))
        self.sock.sendall(out)

    def read_frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame (type, flags, stream, payload), answering SETTINGS and PING as a
        well-behaved peer must; None once the server has closed the connection."""
        while True:
            while len(self._buf) < 9 or len(self._buf) < 9 + int.from_bytes(self._buf[:3]):
                try:
                    chunk = self.sock.recv(65536)
                except (ssl.SSLError, OSError):
                    return None
                if not chunk:
                    return None
                self._buf += chunk
            length = int.from_bytes(self._buf[:3])
            kind, flags = self._buf[3], self._buf[4]
            stream = struct.unpack("!I", self._buf[5:9])[0] & MAX_WINDOW
            payload, self._buf = self._buf[9 : 9 + length], self._buf[9 + length :]
            if kind == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self.sock.sendall(frame(PING, ACK, 0, payload))
            return kind, flags, stream, payload

    def read_until_data(self) -> bytes:
        """Read until the call's first DATA frame; its payload (b"" if the call ended first)."""
        while (got := self.read_frame()) is not None:
            kind, flags, stream, payload = got
            if stream == 1 and kind == DATA and payload:
                return payload
            if stream == 1 and (kind == RST_STREAM or (kind == HEADERS and flags & END_STREAM)):
                return b""
            if kind == GOAWAY:
                return b""
        return b""

    def first_frame(self) -> int | None:
        """The type of the first frame the server sends, None if it sends none."""
        got = self.read_frame()
        return None if got is None else got[0]

    def vanish(self) -> None:
        """Close with a TCP reset: no TLS close_notify, no HTTP/2 goodbye."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
