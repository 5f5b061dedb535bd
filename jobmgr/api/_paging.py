"""List's pages: which jobs go in one reply, and the token that says where the next begins.

Jobs come oldest first, ties broken by id, so a token (the last job's start time and id)
stays valid while jobs start and end: a new job sorts after every page already handed out,
and a pruned one is simply not there any more. A reply holds at most ``page_size`` jobs, if
the client asked for a size, and never more than fits in one message: without pages a
long-lived server's List would outgrow the 4 MiB a client accepts and fail for good.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable

from jobmgr.worker import InvalidSpec, JobStatus

from ._proto import job_pb2 as pb
from ._wire import MAX_MESSAGE_BYTES

# Room left for the token and the reply's own framing.
REPLY_BUDGET = MAX_MESSAGE_BYTES - 4096
# A job's tag and length prefix in the reply, at most.
PER_JOB_FRAMING = 6

Position = tuple[float, str]


def page(
    statuses: Iterable[JobStatus],
    to_proto: Callable[[JobStatus], pb.StatusResponse],
    *,
    page_size: int,
    token: str,
    budget: int = REPLY_BUDGET,
) -> pb.ListResponse:
    """The page of ``statuses`` (already filtered, in any order) after ``token``."""
    after = _position(token) if token else None
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
            reply.next_page_token = _token(last)
            break
        reply.jobs.append(message)  # one job over the budget still goes alone: it fits 4 MiB
        used += size
        last = status
    return reply


def _key(status: JobStatus) -> Position:
    return (status.started_at, status.id)


def _token(status: JobStatus) -> str:
    text = json.dumps([status.started_at, status.id])
    return base64.urlsafe_b64encode(text.encode()).decode()


def _position(token: str) -> Position:
    try:
        started_at, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(started_at, float | int) and isinstance(job_id, str):
            return (float(started_at), job_id)
    except (ValueError, TypeError, binascii.Error):
        pass
    raise InvalidSpec("page_token is not one a List reply gave: send it back as it came")
