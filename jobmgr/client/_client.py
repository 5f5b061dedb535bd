"""Client: the blocking form of jobmgr.client (AsyncClient is the asyncio one)."""

from __future__ import annotations

import sys
import time
from collections.abc import Generator, Iterator, Sequence
from datetime import datetime
from typing import IO, Any

import grpc

from jobmgr.api import job_pb2

from . import _convert as convert
from ._common import ClientBase, ReaderBase
from ._connection import (
    PREFIX_PAGE,
    Backoff,
    id_prefix,
    is_full_id,
    log,
    pick,
)
from ._errors import JobLost, JobmgrError, from_rpc
from ._types import JobSpec, JobState, JobStatus, OutputChunk, Stream


class Client(ClientBase):
    """A connection to one jobmgr server over mutual TLS 1.3. Thread-safe; close it (or use
    it as a context manager) when done. Every method that takes a job id also takes a unique
    prefix of one, as git and docker do. Errors are JobmgrError subclasses (see _errors)."""

    _secure_channel = staticmethod(grpc.secure_channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- calls -----------------------------------------------------------------------------

    def start(self, job: JobSpec | Sequence[str | bytes]) -> str:
        """Start a job (a JobSpec, or just its argv); returns its id once it runs."""
        spec = job if isinstance(job, JobSpec) else JobSpec(job)
        return str(self._call(self._stub.Start, convert.start_request(spec)).uuid)

    def stop(self, job_id: str, *, grace: float | None = None) -> JobStatus:
        """Stop a job: SIGTERM, then SIGKILL after ``grace`` seconds (None: the server's);
        returns its status once nothing of it runs. A job that has ended is left as it is."""
        request = convert.stop_request(self.resolve(job_id), grace)
        return convert.status(self._call(self._stub.Stop, request).job)

    def status(self, job_id: str) -> JobStatus:
        return convert.status(self._status(self.resolve(job_id)))

    def list(
        self, *, state: JobState | None = None, owner: str = "", page_size: int = 0
    ) -> Iterator[JobStatus]:
        """The jobs this client may see (those in ``state``, those ``owner`` started: a CN or
        a whole Subject), oldest first, fetched a page at a time as the iterator goes."""
        for message in self._list(state, owner, page_size, ""):
            yield convert.status(message)

    def resolve(self, job_id: str) -> str:
        """The whole id of the job ``job_id`` names: itself, or the one job whose id starts
        with it. JobNotFound if none does; AmbiguousJobId if several do."""
        if is_full_id(job_id):
            return job_id
        prefix = id_prefix(job_id)
        ids = [m.uuid for m in self._list(None, "", PREFIX_PAGE, prefix, pages=1)]
        if any(not i.startswith(prefix) for i in ids):  # a server without id_prefix
            ids = [m.uuid for m in self._list(None, "", 0, "")]
        return pick(job_id, prefix, ids)

    def output(
        self,
        job_id: str,
        *,
        follow: bool = True,
        tail: int | None = None,
        offset: int = 0,
        since: datetime | None = None,
    ) -> OutputReader:
        """The job's output, chunk by chunk, from byte ``offset`` (or from its last ``tail``
        lines, or from what the server captured at or after ``since``: output a server
        without capture times logged is never selected so); with ``follow``, until the job
        has ended. A stream that drops is resumed from
        the first byte not yet handed out, for up to ``reconnect_for`` seconds: each byte
        comes exactly once."""
        return OutputReader(
            self, self.resolve(job_id), follow=follow, tail=tail, offset=offset, since=since
        )

    def wait(self, job_id: str) -> JobStatus:
        """Block until the job has ended; its final status."""
        reader = self.output(job_id, tail=0)
        for _ in reader:
            pass
        assert reader.status is not None
        return reader.status

    def run(
        self,
        job: JobSpec | Sequence[str | bytes],
        *,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> int:
        """Start a job, copy its stdout and stderr to these (ours by default) until it ends,
        and return its exit code, or 128 + the signal that ended it. JobLost if it has
        neither (its supervisor died)."""
        reader = self.output(self.start(job))
        sinks = {
            Stream.STDOUT: stdout or sys.stdout.buffer,
            Stream.STDERR: stderr or sys.stderr.buffer,
        }
        for chunk in reader:
            sinks[chunk.stream].write(chunk.data)
            sinks[chunk.stream].flush()
        assert reader.status is not None
        return exit_status(reader.status)

    # ---- the wire --------------------------------------------------------------------------

    def _call(self, method: Any, request: Any) -> Any:
        try:
            reply = method(request)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._reached = True
        return reply

    def _error(self, error: grpc.RpcError) -> JobmgrError:
        if self._never_reached(error):
            return self.endpoint.unreachable(error)
        return from_rpc(error)

    def _status(self, job_id: str, backoff: Backoff | None = None) -> job_pb2.StatusResponse:
        """Status, tried again while ``backoff`` allows (when given)."""
        request = job_pb2.StatusRequest(uuid=job_id)
        while True:
            try:
                reply = self._stub.Status(request)
            except grpc.RpcError as exc:
                delay = None
                if backoff is not None:
                    delay = backoff.delay(exc, self.endpoint.target, reached=self._reached)
                if delay is None:
                    raise self._error(exc) from None
                time.sleep(delay)
                continue
            self._reached = True
            message: job_pb2.StatusResponse = reply
            return message

    def _list(
        self, state: JobState | None, owner: str, page_size: int, prefix: str, pages: int = -1
    ) -> Iterator[job_pb2.StatusResponse]:
        request = convert.list_request(state, owner, page_size, prefix)
        while pages:
            reply = self._call(self._stub.List, request)
            yield from reply.jobs
            if not reply.next_page_token:
                return
            request.page_token, pages = reply.next_page_token, pages - 1


def exit_status(status: JobStatus) -> int:
    """The job's exit status (see JobStatus.exit_status); JobLost when it has none."""
    code = status.exit_status
    if code is None:
        why = f": {status.reason}" if status.reason else ""
        raise JobLost(f"job {status.id} was {status.state.value}{why}", status)
    return code


class OutputReader(ReaderBase, Iterator[OutputChunk]):
    """A job's output as an iterator of chunks, resuming a stream that drops (see
    Client.output). ``offset`` is the output offset of the next byte it hands out: a later
    ``output(job_id, offset=reader.offset)`` goes on from there. Once a followed stream has
    ended, ``status`` is the job's final status; ``truncated`` says the server dropped part
    of the output (its output cap, or a full disk). ``close`` ends the call."""

    def __init__(
        self,
        client: Client,
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

    def __iter__(self) -> OutputReader:
        return self

    def __next__(self) -> OutputChunk:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def _read(
        self, follow: bool, tail: int | None, since: datetime | None
    ) -> Generator[OutputChunk, None, None]:
        client = self._client
        backoff = Backoff(client._reconnect_for)
        while True:
            call = client._stub.Output(self._request(follow, tail, since))
            try:
                for message in call:
                    client._reached, tail, since = True, None, None
                    if chunk := self._take(message):
                        yield chunk
            except grpc.RpcError as exc:
                self._reconnect(exc, backoff)
                continue
            finally:
                call.cancel()
            if not follow:
                return
            if self._ended(convert.status(client._status(self.job_id, backoff))):
                return

    def _reconnect(self, error: grpc.RpcError, backoff: Backoff) -> None:
        """Wait until the server answers again after ``error`` (a Status call says so);
        raises the JobmgrError for it if that is not worth waiting for, or takes too long."""
        client = self._client
        told = False
        while True:
            delay = backoff.delay(error, client.endpoint.target, reached=client._reached)
            if delay is None:
                raise client._error(error) from None
            if not told:
                self._say_lost(client.endpoint.target, error)
                told = True
            time.sleep(delay)
            try:
                client._stub.Status(job_pb2.StatusRequest(uuid=self.job_id))
            except grpc.RpcError as again:
                error = again
                continue
            backoff.reset()
            log.warning("reconnected to %s", client.endpoint.target)
            return
