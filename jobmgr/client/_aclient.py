"""AsyncClient: the asyncio form of jobmgr.client, method for method Client's."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime
from typing import IO, Any

import grpc

from jobmgr.api import job_pb2

from . import _convert as convert
from ._client import exit_status
from ._common import ClientBase, ReaderBase
from ._connection import (
    PREFIX_PAGE,
    Backoff,
    id_prefix,
    is_full_id,
    log,
    pick,
)
from ._errors import JobmgrError, from_rpc
from ._types import JobSpec, JobState, JobStatus, OutputChunk, Stream


class AsyncClient(ClientBase):
    """Client for asyncio: the same calls, awaited (``output`` and ``list`` are async
    iterators). Use it from one event loop; ``async with`` closes it."""

    _secure_channel = staticmethod(grpc.aio.secure_channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- calls (see Client for what each does) ---------------------------------------------

    async def start(self, job: JobSpec | Sequence[str | bytes]) -> str:
        spec = job if isinstance(job, JobSpec) else JobSpec(job)
        reply = await self._call(self._stub.Start, convert.start_request(spec))
        return str(reply.uuid)

    async def stop(self, job_id: str, *, grace: float | None = None) -> JobStatus:
        request = convert.stop_request(await self.resolve(job_id), grace)
        return convert.status((await self._call(self._stub.Stop, request)).job)

    async def status(self, job_id: str) -> JobStatus:
        return convert.status(await self._status(await self.resolve(job_id)))

    async def list(
        self, *, state: JobState | None = None, owner: str = "", page_size: int = 0
    ) -> AsyncIterator[JobStatus]:
        async for message in self._list(state, owner, page_size, ""):
            yield convert.status(message)

    async def resolve(self, job_id: str) -> str:
        if is_full_id(job_id):
            return job_id
        prefix = id_prefix(job_id)
        ids = [m.uuid async for m in self._list(None, "", PREFIX_PAGE, prefix, pages=1)]
        if any(not i.startswith(prefix) for i in ids):  # a server without id_prefix
            ids = [m.uuid async for m in self._list(None, "", 0, "")]
        return pick(job_id, prefix, ids)

    async def output(
        self,
        job_id: str,
        *,
        follow: bool = True,
        tail: int | None = None,
        offset: int = 0,
        since: datetime | None = None,
    ) -> AsyncOutputReader:
        return AsyncOutputReader(
            self, await self.resolve(job_id), follow=follow, tail=tail, offset=offset, since=since
        )

    async def wait(self, job_id: str) -> JobStatus:
        reader = await self.output(job_id, tail=0)
        async for _ in reader:
            pass
        assert reader.status is not None
        return reader.status

    async def run(
        self,
        job: JobSpec | Sequence[str | bytes],
        *,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> int:
        reader = await self.output(await self.start(job))
        sinks = {
            Stream.STDOUT: stdout or sys.stdout.buffer,
            Stream.STDERR: stderr or sys.stderr.buffer,
        }
        async for chunk in reader:
            sinks[chunk.stream].write(chunk.data)
            sinks[chunk.stream].flush()
        assert reader.status is not None
        return exit_status(reader.status)

    # ---- the wire --------------------------------------------------------------------------

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            reply = await method(request)
        except grpc.aio.AioRpcError as exc:
            raise await self._error(exc) from None
        self._reached = True
        return reply

    async def _error(self, error: grpc.aio.AioRpcError) -> JobmgrError:
        if self._never_reached(error):
            # Finding out why takes a connection and a handshake: off the event loop.
            return await asyncio.to_thread(self.endpoint.unreachable, error)
        return from_rpc(error)

    async def _status(self, job_id: str, backoff: Backoff | None = None) -> job_pb2.StatusResponse:
        request = job_pb2.StatusRequest(uuid=job_id)
        while True:
            try:
                reply = await self._stub.Status(request)
            except grpc.aio.AioRpcError as exc:
                delay = None
                if backoff is not None:
                    delay = backoff.delay(exc, self.endpoint.target, reached=self._reached)
                if delay is None:
                    raise await self._error(exc) from None
                await asyncio.sleep(delay)
                continue
            self._reached = True
            message: job_pb2.StatusResponse = reply
            return message

    async def _list(
        self, state: JobState | None, owner: str, page_size: int, prefix: str, pages: int = -1
    ) -> AsyncIterator[job_pb2.StatusResponse]:
        request = convert.list_request(state, owner, page_size, prefix)
        while pages:
            reply = await self._call(self._stub.List, request)
            for job in reply.jobs:
                yield job
            if not reply.next_page_token:
                return
            request.page_token, pages = reply.next_page_token, pages - 1


class AsyncOutputReader(ReaderBase):
    """OutputReader for asyncio: an async iterator of chunks with the same ``offset``,
    ``status`` and ``truncated``; ``aclose`` ends the call."""

    def __init__(
        self,
        client: AsyncClient,
        job_id: str,
        *,
        follow: bool,
        tail: int | None,
        offset: int,
        since: datetime | None = None,
    ) -> None:
        super().__init__(job_id, offset)
        self._client = client
        self._chunks = self._read(follow, tail, since)

    def __aiter__(self) -> AsyncOutputReader:
        return self

    async def __anext__(self) -> OutputChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def _read(
        self, follow: bool, tail: int | None, since: datetime | None
    ) -> AsyncGenerator[OutputChunk, None]:
        client = self._client
        backoff = Backoff(client._reconnect_for)
        while True:
            call = client._stub.Output(self._request(follow, tail, since))
            try:
                async for message in call:
                    client._reached, tail, since = True, None, None
                    if chunk := self._take(message):
                        yield chunk
            except grpc.aio.AioRpcError as exc:
                await self._reconnect(exc, backoff)
                continue
            finally:
                call.cancel()
            if not follow:
                return
            if self._ended(convert.status(await client._status(self.job_id, backoff))):
                return

    async def _reconnect(self, error: grpc.aio.AioRpcError, backoff: Backoff) -> None:
        client = self._client
        told = False
        while True:
            delay = backoff.delay(error, client.endpoint.target, reached=client._reached)
            if delay is None:
                raise await client._error(error) from None
            if not told:
                self._say_lost(client.endpoint.target, error)
                told = True
            await asyncio.sleep(delay)
            try:
                await client._stub.Status(job_pb2.StatusRequest(uuid=self.job_id))
            except grpc.aio.AioRpcError as again:
                error = again
                continue
            backoff.reset()
            log.warning("reconnected to %s", client.endpoint.target)
            return
