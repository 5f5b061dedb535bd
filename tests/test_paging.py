"""List's pages: sizes, byte budget, order with ties, and tokens, on statuses made here."""

from __future__ import annotations

import base64

import pytest

from jobmgr.api._mapping import status_to_proto
from jobmgr.api._paging import page
from jobmgr.worker import InvalidSpec, JobState, JobStatus, Limits


def status(job_id: str, started_at: float, argv: tuple[str, ...] = ("true",)) -> JobStatus:
    return JobStatus(job_id, argv, "admin", Limits(), JobState.EXITED, started_at)


def all_pages(statuses: list[JobStatus], **kwargs: int) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        reply = page(statuses, status_to_proto, token=token, **kwargs)
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
    first = page(statuses, status_to_proto, page_size=2, token="")
    statuses.append(status("late", 99.0))
    rest = page(statuses, status_to_proto, page_size=0, token=first.next_page_token)
    assert [job.uuid for job in rest.jobs] == ["job-2", "job-3", "late"]
    assert not rest.next_page_token


@pytest.mark.parametrize(
    "token",
    ["nonsense", "!!!", base64.urlsafe_b64encode(b'{"a": 1}').decode(),
     base64.urlsafe_b64encode(b'["yesterday", "job-1"]').decode()],
)  # fmt: skip
def test_a_token_no_reply_gave_is_refused(token: str) -> None:
    with pytest.raises(InvalidSpec, match="page_token"):
        page([status("job-0", 0.0)], status_to_proto, page_size=0, token=token)
