"""List's pages: sizes, byte budget, order with ties, and signed tokens, on statuses made
here."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from jobmgr.api._mapping import status_to_proto
from jobmgr.api._paging import KEY_FILE, MAX_TOKEN_CHARS, PageTokens, page
from jobmgr.worker import InvalidSpec, JobState, JobStatus, Limits

TOKENS = PageTokens(b"k" * 32)


def status(job_id: str, started_at: float, argv: tuple[str, ...] = ("true",)) -> JobStatus:
    return JobStatus(job_id, argv, "admin", Limits(), JobState.EXITED, started_at)


def all_pages(statuses: list[JobStatus], **kwargs: int) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        reply = page(statuses, status_to_proto, token=token, tokens=TOKENS, **kwargs)
        pages.append([job.uuid for job in reply.jobs])
        if not reply.next_page_token:
            return pages
        token = reply.next_page_token


def test_pages_of_a_size_hold_every_job_once_oldest_first_ties_by_id() -> None:
    statuses = [status(f"job-{i}", started_at=float(i // 2)) for i in reversed(range(7))]
    assert all_pages(statuses, page_size=3) == [
        ["job-0", "job-1", "job-2"],
        ["job-3", "job-4", "job-5"],
        ["job-6"],
    ]


def test_without_a_size_one_page_holds_everything_that_fits() -> None:
    statuses = [status(f"job-{i}", float(i)) for i in range(50)]
    assert all_pages(statuses, page_size=0) == [[f"job-{i}" for i in range(50)]]


def test_the_byte_budget_splits_pages_and_one_oversized_job_still_goes_alone() -> None:
    big = ("x" * 900,)
    statuses = [status(f"job-{i}", float(i), big) for i in range(5)]
    pages = all_pages(statuses, page_size=0, budget=2000)
    assert pages == [["job-0", "job-1"], ["job-2", "job-3"], ["job-4"]]
    assert all_pages(statuses, page_size=0, budget=10) == [[f"job-{i}"] for i in range(5)]


def test_a_job_started_between_pages_comes_on_a_later_page() -> None:
    statuses = [status(f"job-{i}", float(i)) for i in range(4)]
    first = page(statuses, status_to_proto, page_size=2, token="", tokens=TOKENS)
    statuses.append(status("late", 99.0))
    rest = page(statuses, status_to_proto, page_size=0, token=first.next_page_token, tokens=TOKENS)
    assert [job.uuid for job in rest.jobs] == ["job-2", "job-3", "late"]
    assert not rest.next_page_token


def _signed_by(key: bytes, position: tuple[float, str]) -> str:
    return PageTokens(key).token(position)


@pytest.mark.parametrize(
    "token",
    ["nonsense", "!!!", "[" * 200_000, "A" * (MAX_TOKEN_CHARS + 1),
     base64.urlsafe_b64encode(b'{"a": 1}').decode(),
     base64.urlsafe_b64encode(json.dumps([0.5, "job-1"]).encode()).decode(),
     _signed_by(b"another server's key", (0.5, "job-1")),
     TOKENS.token((0.5, "job-1"))[:-2] + "AA"],
    ids=["word", "punctuation", "brackets", "oversized", "json", "unsigned position",
         "another key", "tampered"],
)  # fmt: skip
def test_a_token_this_server_did_not_sign_is_refused(token: str) -> None:
    with pytest.raises(InvalidSpec, match="page_token"):
        page([status("job-0", 0.0)], status_to_proto, page_size=0, token=token, tokens=TOKENS)


def test_a_token_is_short_and_reads_back_to_its_position() -> None:
    token = TOKENS.token((1764633600.123456, "0b6f2d4e-1a2b-4c3d-8e9f-0123456789ab"))
    assert len(token) <= MAX_TOKEN_CHARS
    assert TOKENS.position(token) == (1764633600.123456, "0b6f2d4e-1a2b-4c3d-8e9f-0123456789ab")


def test_the_key_is_made_private_once_and_kept_across_restarts(tmp_path: Path) -> None:
    token = PageTokens.kept_in(tmp_path).token((2.0, "job-2"))
    key = tmp_path / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    assert PageTokens.kept_in(tmp_path).position(token) == (2.0, "job-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_a_torn_key_is_replaced(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"short")
    PageTokens.kept_in(tmp_path)
    assert len((tmp_path / KEY_FILE).read_bytes()) == 32
