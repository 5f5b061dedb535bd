"""The JobManager servicer: each RPC is one worker call between two translations.

Access to the method has been checked before any method here runs (see _guard); which jobs a
caller may see is decided here, by ``JobVisibility``, from the caller's identity (its
certificate's whole Subject, see _auth), which is also the owner recorded with the jobs it
starts. Worker errors become status codes in one
place, ``_WorkerErrorsAsStatus``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

import grpc

from jobmgr.worker import JobNotFound, JobStatus, Worker, WorkerError

from . import _mapping as mapping
from . import _paging as paging
from ._auth import Caller, identify, owner_matches
from ._paging import PageTokens
from ._proto import job_pb2 as pb
from ._proto import job_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class JobVisibility:
    """Which jobs a caller may see: all of them, unless its role is in ``own_jobs_only``, in
    which case only those it started (owner == its identity, the whole Subject: a certificate
    sharing only the CN is someone else). Another's job is NOT_FOUND to it, exactly like a
    job that does not exist, so its id reveals nothing. A job recorded with a bare CN as its
    owner equals no identity, so it is visible only to roles that see all jobs."""

    own_jobs_only: frozenset[str] = frozenset()

    @classmethod
    def restricting(cls, roles: Collection[str]) -> JobVisibility:
        return cls(frozenset(roles))

    def sees(self, caller: Caller, status: JobStatus) -> bool:
        return caller.role not in self.own_jobs_only or status.owner == caller.identity


ALL_JOBS_VISIBLE = JobVisibility()


class _WorkerErrorsAsStatus:
    """Turn a WorkerError raised inside the block into the RPC's status code and message."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, WorkerError):
            await self._context.abort(
                mapping.status_code(exc), mapping.bounded(str(exc)), mapping.reason(exc)
            )


class JobManagerService(pb_grpc.JobManagerServicer):
    """Serves the job.JobManager API from a worker. ``visibility`` may be replaced while it
    serves (a reload): each call reads it once."""

    def __init__(
        self,
        worker: Worker,
        visibility: JobVisibility = ALL_JOBS_VISIBLE,
        tokens: PageTokens | None = None,
    ) -> None:
        self._worker = worker
        self.visibility = visibility
        self._tokens = tokens or PageTokens.kept_in(worker.state_dir)

    async def Start(
        self, request: pb.StartRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartResponse:
        async with _WorkerErrorsAsStatus(context):
            spec = mapping.job_spec(request, owner=_caller(context).identity)
            remaining = context.time_remaining()  # the caller's deadline: past it, no launch
            deadline = None if remaining is None else time.monotonic() + remaining
            return pb.StartResponse(uuid=await self._worker.astart(spec, deadline=deadline))

    async def Stop(
        self, request: pb.StopRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopResponse:
        async with _WorkerErrorsAsStatus(context):
            job_id = (await self._visible_job(request.uuid, context)).id
            status = await self._worker.astop(job_id, grace=mapping.grace(request))
            return pb.StopResponse(job=mapping.status_to_proto(status))

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        async with _WorkerErrorsAsStatus(context):
            return mapping.status_to_proto(await self._visible_job(request.uuid, context))

    # Yields OutputResponse messages already encoded, which the server sends as they are
    # (_server._add_job_manager): hence bytes where the generated base says messages.
    async def Output(  # type: ignore[override]
        self, request: pb.OutputRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async with _WorkerErrorsAsStatus(context):
            job_id = (await self._visible_job(request.uuid, context)).id
            chunks = self._worker.aoutput(
                job_id,
                follow=not request.no_follow,
                tail=mapping.output_tail(request),
                offset=request.offset,
                since=mapping.output_since(request),
            )
            async for chunk in chunks:
                for message in mapping.output_to_wire(chunk):
                    yield message
            if await self._truncated(job_id):
                yield mapping.TRUNCATION_NOTICE

    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        async with _WorkerErrorsAsStatus(context):
            caller, visibility = _caller(context), self.visibility
            wanted = mapping.state_from_proto(request.state)
            prefix = mapping.id_prefix(request)
            # list() is a blocking call (it takes the worker's lock): keep it off the loop.
            statuses = await asyncio.to_thread(self._worker.list)
            return paging.page(
                (
                    s
                    for s in statuses
                    if (wanted is None or s.state is wanted)
                    and s.id.startswith(prefix)
                    and owner_matches(s.owner, request.owner)
                    and visibility.sees(caller, s)
                ),
                lambda s: mapping.status_to_proto(s, argv_limit=mapping.LIST_ARGV_BYTES),
                page_size=request.page_size,
                token=request.page_token,
                tokens=self._tokens,
            )

    async def _visible_job(self, text: str, context: grpc.aio.ServicerContext) -> JobStatus:
        """The status of the job a request names, if the caller may see that job; else
        JobNotFound."""
        job_id = mapping.job_id(text)
        status = await self._worker.astatus(job_id)
        if not self.visibility.sees(_caller(context), status):
            raise JobNotFound(job_id)  # word for word what an unknown id gets
        return status

    async def _truncated(self, job_id: str) -> bool:
        try:
            return (await self._worker.astatus(job_id)).output_truncated
        except JobNotFound:  # pruned while its output was being sent
            return False


def _caller(context: grpc.aio.ServicerContext) -> Caller:
    return identify(context.auth_context())
