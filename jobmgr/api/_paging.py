"""List's pages: which jobs go in one reply, and the token that says where the next begins.

Jobs come oldest first, ties broken by id, so a token (the last job's start time and id)
stays valid while jobs start and end: a new job sorts after every page already handed out,
and a pruned one is simply not there any more. A reply holds at most ``page_size`` jobs, if
the client asked for a size, and never more than fits in one message: without pages a
long-lived server's List would outgrow the 4 MiB a client accepts and fail for good.

A token is opaque to clients and signed (HMAC-SHA256, keyed by a secret kept in the state
directory, see ``PageTokens``), so the server reads back only what it wrote: a token of
another shape, of a forged position or of more than ``MAX_TOKEN_CHARS`` is refused before
anything in it is decoded. It carries the position of a job already in the caller's hands,
nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from jobmgr.worker import InvalidSpec, JobStatus

from ._proto import job_pb2 as pb
from ._wire import MAX_MESSAGE_BYTES

# Room left for the token and the reply's own framing.
REPLY_BUDGET = MAX_MESSAGE_BYTES - 4096
# A job's tag and length prefix in the reply, at most.
PER_JOB_FRAMING = 6
# A token this server writes is 103 characters (a job id is a 36-character UUID); longer
# ones are refused unread.
MAX_TOKEN_CHARS = 256
KEY_FILE = "page-token.key"
KEY_BYTES = 32

_VERSION = b"\x01"
_STARTED_AT = struct.Struct(">d")
_MAC_BYTES = hashlib.sha256().digest_size
_CONTEXT = b"jobmgr List page token\x00"  # keys no other use of HMAC with the same secret

Position = tuple[float, str]


class PageTokens:
    """Writes and reads List page tokens, signed with ``key``."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a page token key needs at least 16 bytes")
        self._key = key

    @classmethod
    def kept_in(cls, state_dir: str | Path) -> PageTokens:
        """Tokens keyed by the secret in ``state_dir``, made there (0600 from its first byte)
        at the first start: tokens stay good across restarts, and only the server's user can
        read the key (the state directory is private)."""
        return cls(_key_in(Path(state_dir)))

    def token(self, position: Position) -> str:
        started_at, job_id = position
        body = _VERSION + _STARTED_AT.pack(started_at) + job_id.encode()
        return _b64(body + self._mac(body))

    def position(self, token: str) -> Position:
        """The position ``token`` marks; InvalidSpec unless this server wrote it."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidSpec(
                f"page_token is {len(token)} characters, longer than any this server gives "
                f"(at most {MAX_TOKEN_CHARS}): send back a List reply's next_page_token as it came"
            )
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, binascii.Error):
            raw = b""
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        fixed = len(_VERSION) + _STARTED_AT.size
        if len(body) > fixed and body[:1] == _VERSION and hmac.compare_digest(mac, self._mac(body)):
            (started_at,) = _STARTED_AT.unpack_from(body, len(_VERSION))
            return started_at, body[fixed:].decode()
        raise InvalidSpec(
            "page_token is not one this server gave (tokens are signed): send back a List "
            "reply's next_page_token as it came, or leave it empty to start from the first page"
        )

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, _CONTEXT + body, hashlib.sha256).digest()


def page(
    statuses: Iterable[JobStatus],
    to_proto: Callable[[JobStatus], pb.StatusResponse],
    *,
    page_size: int,
    token: str,
    tokens: PageTokens,
    budget: int = REPLY_BUDGET,
) -> pb.ListResponse:
    """The page of ``statuses`` (already filtered, in any order) after ``token``."""
    after = tokens.position(token) if token else None
    reply = pb.ListResponse()
    used = 0
    last: JobStatus | None = None
    for status in sorted(statuses, key=_key):
        if after is not None and _key(status) <= after:
            continue
        message = to_proto(status)
        size = message.ByteSize() + PER_JOB_FRAMING
        full = (page_size and len(reply.jobs) == page_size) or used + size > budget
        if full and last is not None:
            reply.next_page_token = tokens.token(_key(last))
            break
        reply.jobs.append(message)  # one job over the budget still goes alone: it fits 4 MiB
        used += size
        last = status
    return reply


def _key(status: JobStatus) -> Position:
    return (status.started_at, status.id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key_in(state_dir: Path) -> bytes:
    """The key in ``state_dir/KEY_FILE``, made if missing or not a whole key (a crash can
    leave no torn key: it is written aside and renamed into place)."""
    path = state_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    else:
        with os.fdopen(fd, "rb") as file:
            key = file.read(KEY_BYTES + 1)
        if len(key) == KEY_BYTES:
            return key
    key = secrets.token_bytes(KEY_BYTES)
    aside = state_dir / f".{KEY_FILE}.{os.getpid()}"
    aside.unlink(missing_ok=True)
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(aside, path)
    return key
