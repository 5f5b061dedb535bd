"""Steps for features/auth_roles.feature."""

from __future__ import annotations

import grpc
from pytest_bdd import scenarios, then, when

from harness.rpc import call
from jobmgr.api import job_pb2

from .fixtures_scenario import Scenario

scenarios("auth_roles.feature")

METHODS = ("Start", "Stop", "Status", "Output", "List")


@when("each client below makes each call on that job")
def _every_call(scenario: Scenario) -> None:
    # The calls are made in the Then step, which has the table of clients.
    pass


@then("the answers are")
def _answers_are(scenario: Scenario, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    assert tuple(header[1:]) == METHODS, header
    mismatches = []
    for kind, *expected in rows:
        stub = scenario.server.stub(kind)
        requests = {
            "Start": (stub.Start, job_pb2.StartRequest(cmd="true")),
            "Stop": (stub.Stop, job_pb2.StopRequest(uuid=scenario.job)),
            "Status": (stub.Status, job_pb2.StatusRequest(uuid=scenario.job)),
            "Output": (stub.Output, job_pb2.OutputRequest(uuid=scenario.job)),
            "List": (stub.List, job_pb2.ListRequest()),
        }
        for method, want in zip(METHODS, expected, strict=True):
            got = call(*requests[method])
            if got.code != grpc.StatusCode[want]:
                mismatches.append(
                    f"{kind} {method}: want {want}, got {got.code.name} {got.details}"
                )
    assert not mismatches, "\n".join(mismatches)
