"""Steps for features/auth_roles.feature."""

from __future__ import annotations

import grpc
from pytest_bdd import scenarios, then, when

from jobmgr.api import job_pb2

from ._grpc_steps import *  # noqa: F403  # the shared steps
from ._grpc_steps import ApiScenario, call
from .fixtures_server import RunningServer

scenarios("auth_roles.feature")

METHODS = ("Start", "Stop", "Status", "Output", "List")


@when("each client below makes each call on that job")
def _every_call(job_server: RunningServer, api: ApiScenario) -> None:
    # The calls are made in the Then step, which has the table of clients.
    pass


@then("the answers are")
def _answers_are(job_server: RunningServer, api: ApiScenario, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    assert tuple(header[1:]) == METHODS, header
    mismatches = []
    for kind, *expected in rows:
        stub = job_server.stub(kind)
        requests = {
            "Start": (stub.Start, job_pb2.StartRequest(cmd="true")),
            "Stop": (stub.Stop, job_pb2.StopRequest(uuid=api.job)),
            "Status": (stub.Status, job_pb2.StatusRequest(uuid=api.job)),
            "Output": (stub.Output, job_pb2.OutputRequest(uuid=api.job)),
            "List": (stub.List, job_pb2.ListRequest()),
        }
        for method, want in zip(METHODS, expected, strict=True):
            got = call(*requests[method])
            if got.code != grpc.StatusCode[want]:
                mismatches.append(
                    f"{kind} {method}: want {want}, got {got.code.name} {got.details}"
                )
    assert not mismatches, "\n".join(mismatches)
