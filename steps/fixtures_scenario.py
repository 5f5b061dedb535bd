"""The one notebook of a scenario: what its steps learn and pass on to later steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.client import Client
from harness.rpc import CallResult
from harness.server import ServerProgram


@dataclass
class Scenario:
    """What one scenario's steps pass to each other: the job they speak of, the server its
    clients talk to (in this process or the jobmgr-server program), the last call's result,
    and anything else under ``notes``."""

    job: str = ""
    result: CallResult | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    _server: Client | None = None

    @property
    def server(self) -> Client:
        """The server the scenario's clients talk to."""
        assert self._server is not None, "no server was started"
        return self._server

    @server.setter
    def server(self, server: Client) -> None:
        self._server = server

    @property
    def program(self) -> ServerProgram:
        """The jobmgr-server program the scenario runs."""
        assert isinstance(self._server, ServerProgram), "no jobmgr-server program was started"
        return self._server

    @property
    def last(self) -> CallResult:
        """The result of the last call a step made."""
        assert self.result is not None, "no call was made"
        return self.result


@pytest.fixture
def scenario() -> Scenario:
    return Scenario()
