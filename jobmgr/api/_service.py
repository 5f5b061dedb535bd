"""The JobManager servicer: each RPC is one worker call between two translations.

Access has been checked before any method here runs (see _guard); worker errors become status
codes in one place, ``_WorkerErrorsAsStatus``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from jobmgr.worker import Worker, WorkerError

from . import _mapping as mapping
from ._auth import identify
from ._proto import job_pb2 as pb
from ._proto import job_pb2_grpc as pb_grpc


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
            await self._context.abort(mapping.status_code(exc), str(exc))


class JobManagerService(pb_grpc.JobManagerServicer):
    """Serves the job.JobManager API from a worker."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def Start(
        self, request: pb.StartRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartResponse:
        async with _WorkerErrorsAsStatus(context):
            owner = identify(context.auth_context()).name
            spec = mapping.job_spec(request, owner=owner)
            return pb.StartResponse(uuid=await self._worker.astart(spec))

    async def Stop(
        self, request: pb.StopRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopResponse:
        async with _WorkerErrorsAsStatus(context):
            job_id = mapping.job_id(request.uuid)
            status = await self._worker.astop(job_id, grace=mapping.grace(request))
            return pb.StopResponse(job=mapping.status_to_proto(status))

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        async with _WorkerErrorsAsStatus(context):
            status = await self._worker.astatus(mapping.job_id(request.uuid))
            return mapping.status_to_proto(status)

    async def Output(
        self, request: pb.OutputRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.OutputResponse]:
        async with _WorkerErrorsAsStatus(context):
            chunks = self._worker.aoutput(
                mapping.job_id(request.uuid), follow=not request.no_follow
            )
            async for chunk in chunks:
                for message in mapping.output_to_proto(chunk):
                    yield message

    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        async with _WorkerErrorsAsStatus(context):
            wanted = mapping.state_from_proto(request.state)
            # list() is a blocking call (it takes the worker's lock): keep it off the loop.
            statuses = await asyncio.to_thread(self._worker.list)
            return pb.ListResponse(
                jobs=[
                    mapping.status_to_proto(s)
                    for s in statuses
                    if wanted is None or s.state is wanted
                ]
            )
