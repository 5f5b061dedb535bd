"""AsyncClient: the asyncio form of jobmgr.client, method for method Client's."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import grpc

from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from . import _convert as convert
from ._client import exit_status
from ._connection import (
    CHANNEL_OPTIONS,
    PREFIX_PAGE,
    RECONNECT_FOR,
    Backoff,
    Endpoint,
    id_prefix,
    is_full_id,
    log,
    pick,
)
from ._errors import JobmgrError, answered, from_rpc
from ._settings import Settings
from ._types import JobSpec, JobState, JobStatus, OutputChunk, Stream

PathLike = str | os.PathLike[str]


class AsyncClient:
    """Client for asyncio: the same calls, awaited (``output`` and ``list`` are async
    iterators). Use it from one event loop; ``async with`` closes it."""

    def __init__(
        self,
        address: str,
        ca: PathLike,
        cert: PathLike,
        key: PathLike,
        *,
        reconnect_for: float = RECONNECT_FOR,
    ) -> None:
        settings = Settings.resolve(
            host=address, ca=ca, cert=cert, key=key, environ={}, config=Path(os.devnull)
        )
        self._open(Endpoint.read(settings), reconnect_for)

    @classmethod
    def from_env(
        cls,
        context: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        ca: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
        reconnect_for: float = RECONNECT_FOR,
    ) -> AsyncClient:
        """See Client.from_env."""
        settings = Settings.resolve(
            context=context, host=host, port=port, ca=ca, cert=cert, key=key
        )
        client = cls.__new__(cls)
        client._open(Endpoint.read(settings), reconnect_for)
        return client

    def _open(self, endpoint: Endpoint, reconnect_for: float) -> None:
        self.endpoint = endpoint
        self._reconnect_for = reconnect_for
        credentials = channel_credentials(
            ca_pem=endpoint.ca_pem, cert_pem=endpoint.cert_pem, key_pem=endpoint.key_pem
        )
        self._channel = grpc.aio.secure_channel(endpoint.target, credentials, CHANNEL_OPTIONS)
        self._stub = job_pb2_grpc.JobManagerStub(self._channel)
        self._reached = False

    @property
    def settings(self) -> Settings:
        return self.endpoint.settings

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
        request = job_pb2.StopRequest(uuid=await self.resolve(job_id))
        if grace is not None:
            request.grace.FromNanoseconds(round(grace * 1e9))
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
        if (
            not self._reached
            and error.code() == grpc.StatusCode.UNAVAILABLE
            and not answered(error)
        ):
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
        request = job_pb2.ListRequest(
            state=convert.STATE_VALUES[state] if state else job_pb2.JOB_STATE_UNSPECIFIED,
            owner=owner,
            page_size=page_size,
            id_prefix=prefix,
        )
        while pages:
            reply = await self._call(self._stub.List, request)
            for job in reply.jobs:
                yield job
            if not reply.next_page_token:
                return
            request.page_token, pages = reply.next_page_token, pages - 1


class AsyncOutputReader:
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
        self.job_id = job_id
        self.offset = offset
        self.truncated = False
        self.status: JobStatus | None = None
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
            request = convert.output_request(self.job_id, follow, tail, since, self.offset)
            call = client._stub.Output(request)
            try:
                async for message in call:
                    client._reached, tail, since = True, None, None
                    self.truncated = self.truncated or message.truncated
                    chunk = convert.chunk(message, self.offset)
                    self.offset = chunk.offset + len(chunk.data)
                    if chunk.data:
                        yield chunk
            except grpc.aio.AioRpcError as exc:
                await self._reconnect(exc, backoff)
                continue
            finally:
                call.cancel()
            if not follow:
                return
            status = convert.status(await client._status(self.job_id, backoff))
            if status.ended:
                self.status = status
                return
            log.warning(
                "the server ended job %s's output stream while the job runs; resuming at byte %d",
                self.job_id,
                self.offset,
            )

    async def _reconnect(self, error: grpc.aio.AioRpcError, backoff: Backoff) -> None:
        client = self._client
        told = False
        while True:
            delay = backoff.delay(error, client.endpoint.target, reached=client._reached)
            if delay is None:
                raise await client._error(error) from None
            if not told:
                log.warning(
                    "lost the connection to %s (%s); reconnecting to resume job %s's output "
                    "at byte %d",
                    client.endpoint.target,
                    error.code().name,
                    self.job_id,
                    self.offset,
                )
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
