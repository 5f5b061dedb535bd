"""What Client and AsyncClient share: the files they present, channel options, how long and
how often they try to get a lost stream back, and job id prefixes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jobmgr.api import KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS, MAX_MESSAGE_BYTES

from ._errors import (
    RESUMABLE_CODES,
    AmbiguousJobId,
    ConfigError,
    ConnectionFailed,
    JobNotFound,
    code_name,
    from_rpc,
)
from ._settings import Settings

log = logging.getLogger("jobmgr.client")

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
)
RECONNECT_FOR = 120.0  # seconds a lost stream is tried again before the client gives up
FIRST_DELAY, MAX_DELAY = 0.1, 5.0

_FILES = (("ca", "the CA certificate"), ("cert", "the client certificate"), ("key", "the key"))


class Endpoint:
    """A server and the PEM files this client presents to it, read once. (A plain class: a
    dataclass costs a command half a millisecond to create.)"""

    __slots__ = ("ca_pem", "cert_pem", "key_pem", "settings")

    def __init__(self, settings: Settings, ca_pem: bytes, cert_pem: bytes, key_pem: bytes):
        self.settings = settings
        self.ca_pem, self.cert_pem, self.key_pem = ca_pem, cert_pem, key_pem

    @classmethod
    def read(cls, settings: Settings) -> Endpoint:
        pems = [_read(settings, name, what) for name, what in _FILES]
        return cls(settings, *pems)

    @property
    def target(self) -> str:
        return self.settings.address

    def unreachable(self, error: Any) -> ConnectionFailed:
        """The error for a call that never reached the server, saying why (see _diagnose)."""
        from ._diagnose import diagnose  # ssl and a probe, only when something is wrong

        s = self.settings
        why = diagnose(s.host, s.port, ca=s.ca, cert=s.cert, key=s.key) or from_rpc(error).message
        return ConnectionFailed(f"cannot connect to jobmgr-server at {self.target}: {why}")


def _read(settings: Settings, name: str, what: str) -> bytes:
    path: Path = getattr(settings, name)
    source = settings.sources["cert" if name == "key" else name]
    try:
        return path.read_bytes()
    except OSError as exc:
        hint = ""
        if source == "default":
            hint = (
                "; create certificates with `jobmgr-certs`, or name yours with --ca, --cert "
                "and --key, JOBMGR_CA, JOBMGR_CERT and JOBMGR_KEY, or a context (see "
                "`jobmgr-client context --help`)"
            )
        raise ConfigError(f"cannot read {what} {path} ({source}): {exc.strerror}{hint}") from None


class Backoff:
    """When to try a lost stream again: after 0.1 s, doubling to 5 s (with jitter), for
    RECONNECT_FOR seconds from the first failure; ``reset`` once the server answers."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._deadline: float | None = None
        self._delay = FIRST_DELAY

    @property
    def retrying(self) -> bool:
        return self._deadline is not None

    def reset(self) -> None:
        self._deadline, self._delay = None, FIRST_DELAY

    def delay(self, error: Any, target: str, *, reached: bool) -> float | None:
        """Seconds to wait before trying again after ``error``; None when that is not worth
        it (not a lost connection, or the server was never reached). ConnectionFailed once
        the window is over."""
        if code_name(error) not in RESUMABLE_CODES or not reached:
            return None
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._window
        if now >= self._deadline:
            raise ConnectionFailed(
                f"lost the connection to jobmgr-server at {target} and could not get it back "
                f"within {self._window:g}s ({from_rpc(error).message})"
            ) from None
        import random

        delay = min(self._delay, self._deadline - now) * random.uniform(0.8, 1.0)
        self._delay = min(self._delay * 2, MAX_DELAY)
        return delay


_HEX = frozenset("0123456789abcdef")


def is_full_id(text: str) -> bool:
    """Whether ``text`` is a whole job id (a UUID as the server writes them)."""
    return len(text) == 36 and all(
        (c == "-") if i in (8, 13, 18, 23) else (c in _HEX) for i, c in enumerate(text)
    )


def id_prefix(text: str) -> str:
    """A job id prefix in the server's case; JobmgrError unless it can start a job id."""
    prefix = text.lower()
    if not prefix or len(prefix) > 36 or not (_HEX | {"-"}).issuperset(prefix):
        raise JobNotFound(
            f"{text!r} is not a job id or the start of one (job ids are UUIDs such as "
            "3f2b8c9e-6d1a-4f4e-9a57-0c1d2e3f4a5b)"
        )
    return prefix


PREFIX_PAGE = 8  # ids asked for when resolving a prefix: enough to show an ambiguity


def pick(text: str, prefix: str, ids: Iterable[str]) -> str:
    """The one id that starts with ``prefix``; JobNotFound or AmbiguousJobId otherwise."""
    matches = tuple(sorted(i for i in ids if i.startswith(prefix)))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise JobNotFound(f"no job with id {text!r} or an id that starts so")
    shown = ", ".join(matches[: PREFIX_PAGE - 1]) + (", ..." if len(matches) >= PREFIX_PAGE else "")
    raise AmbiguousJobId(
        f"{text!r} starts the ids of several jobs ({shown}); give more of the id", matches
    )
