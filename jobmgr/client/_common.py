"""What Client and AsyncClient share, and OutputReader and AsyncOutputReader: everything but
the waiting, which is blocking in one and awaited in the other."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import grpc

from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from . import _convert as convert
from ._connection import CHANNEL_OPTIONS, RECONNECT_FOR, Endpoint, log
from ._errors import answered
from ._settings import Settings
from ._types import JobStatus, OutputChunk

PathLike = str | os.PathLike[str]


class ClientBase:
    """A connection to one jobmgr server over mutual TLS 1.3 (see Client)."""

    _secure_channel: ClassVar[Callable[..., Any]]  # grpc's, or grpc.aio's

    def __init__(
        self,
        address: str,
        ca: PathLike,
        cert: PathLike,
        key: PathLike,
        *,
        reconnect_for: float = RECONNECT_FOR,
    ) -> None:
        """``address`` is ``HOST[:PORT]``; ``ca`` the CA certificate that signed the server's,
        ``cert`` and ``key`` this client's certificate and key (PEM files).
        ``reconnect_for``: seconds a lost output stream is tried again (see ``output``)."""
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
    ) -> Self:
        """A client for the server the config file's contexts and JOBMGR_* variables name
        (as ``jobmgr-client`` finds it; see jobmgr.client.Settings); the keyword arguments
        win over both, as the command's flags do."""
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
        self._channel = type(self)._secure_channel(endpoint.target, credentials, CHANNEL_OPTIONS)
        self._stub = job_pb2_grpc.JobManagerStub(self._channel)
        self._reached = False  # whether any call got an answer: then failures are losses

    @property
    def settings(self) -> Settings:
        return self.endpoint.settings

    def _never_reached(self, error: grpc.RpcError) -> bool:
        """Whether ``error`` means no server was reached at all (the endpoint then says why)."""
        return (
            not self._reached
            and error.code() == grpc.StatusCode.UNAVAILABLE
            and not answered(error)
        )


class ReaderBase:
    """A job's output as chunks, resuming a stream that drops (see Client.output)."""

    def __init__(self, job_id: str, offset: int) -> None:
        self.job_id = job_id
        self.offset = offset
        self.truncated = False
        self.status: JobStatus | None = None

    def _request(
        self, follow: bool, tail: int | None, since: datetime | None
    ) -> job_pb2.OutputRequest:
        return convert.output_request(self.job_id, follow, tail, since, self.offset)

    def _take(self, message: job_pb2.OutputResponse) -> OutputChunk | None:
        """The chunk a message carries (None for one without bytes), its offset counted."""
        self.truncated = self.truncated or message.truncated
        chunk = convert.chunk(message, self.offset)
        self.offset = chunk.offset + len(chunk.data)
        return chunk if chunk.data else None

    def _ended(self, status: JobStatus) -> bool:
        """After a followed stream ended: whether the job has (else it is resumed)."""
        if status.ended:
            self.status = status
            return True
        log.warning(
            "the server ended job %s's output stream while the job runs; resuming at byte %d",
            self.job_id,
            self.offset,
        )
        return False

    def _say_lost(self, target: str, error: grpc.RpcError) -> None:
        log.warning(
            "lost the connection to %s (%s); reconnecting to resume job %s's output at byte %d",
            target,
            error.code().name,
            self.job_id,
            self.offset,
        )
