"""Steps of features/hardening.feature about the server's log: values a caller chooses (a job
id, a certificate's CN, a TLS server name) that try to break a log line in two or to reach the
operator's terminal, and the one escaped line the server must write for each."""

from __future__ import annotations

import json
import re
import socket
import time

import grpc
import trustme
from pytest_bdd import parsers, then, when

from harness.poll import eventually
from jobmgr import pki
from jobmgr.api import channel_credentials, job_pb2, job_pb2_grpc

from ._h2 import ClientTLS
from ._phrases import unescape
from ._server_steps import mark_log, new_log
from .fixtures_pki import issuer_of
from .fixtures_scenario import Scenario

# Control characters other than the newline that ends each line.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


@when(parsers.parse('the admin asks for the status of job "{job_id}"'))
def _odd_status(scenario: Scenario, job_id: str) -> None:
    scenario.notes["value"] = unescape(job_id)
    mark_log(scenario)
    try:
        scenario.program.status(scenario.notes["value"])
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc


@when(parsers.parse('a client whose certificate has O=user and CN "{cn}" lists the jobs'))
def _odd_cn(scenario: Scenario, trusted_ca: trustme.CA, cn: str) -> None:
    name = unescape(cn)
    issued = pki.issue(
        issuer_of(trusted_ca), purpose="client", common_name=name, organizations=["user"]
    )
    server = scenario.program
    credentials = channel_credentials(
        ca_pem=server.pki.ca_pem, cert_pem=issued.cert_pem, key_pem=issued.key_pem
    )
    scenario.notes["value"] = name
    mark_log(scenario)
    with grpc.secure_channel(server.target, credentials) as channel:
        job_pb2_grpc.JobManagerStub(channel).List(job_pb2.ListRequest(), timeout=30)


@when(parsers.parse('a TLS 1.3 client with the admin certificate asks for the server name "{sni}"'))
def _odd_sni(scenario: Scenario, sni: str) -> None:
    server = scenario.program
    name = unescape(sni)
    scenario.notes["value"] = name
    mark_log(scenario)
    admin = server.pki.client("admin")
    context = ClientTLS(server.pki.ca_path, admin.cert_path, admin.key_path).context()
    context.check_hostname = False  # the name is the attack, not a name to check
    with (
        socket.create_connection(("localhost", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        assert tls.version() == "TLSv1.3"


@then("the server logged the whole value on exactly one line, with no raw control character")
def _one_line(scenario: Scenario) -> None:
    value: str = scenario.notes["value"]
    before, _, after = value.partition("\n")
    tail = after.split("\r")[0]  # what follows the newline, up to the next control character

    def lines() -> list[str]:
        return [line for line in new_log(scenario).splitlines() if tail in line]

    eventually(lambda: bool(lines()), 10.0, f"a log line holding {tail!r}")
    time.sleep(0.3)  # and no second one
    found = lines()
    assert len(found) == 1, found
    assert f"{before}\\n{tail}" in found[0], f"the value is not whole and escaped: {found[0]!r}"
    raw = RAW_CONTROL.search(new_log(scenario))
    assert raw is None, f"a raw control character {raw.group()!r} is in the log"
    scenario.notes["line"] = found[0]


@then("that line names the job id escaped and the caller's peer address")
def _names_job_and_peer(scenario: Scenario) -> None:
    line, value = scenario.notes["line"], scenario.notes["value"]
    if line.startswith("{"):
        entry = json.loads(line)
        assert entry["job"] == value and entry["peer"].startswith("ipv"), entry
    else:
        escaped = '"' + value.replace("\n", "\\n").replace("\r", "\\r") + '"'
        escaped = escaped.replace("\x1b", "\\x1b").replace("\x9b", "\\x9b")
        assert f"job={escaped}" in line, line
        assert re.search(r" peer=ipv[46]:\S+", line), line


@then(parsers.parse('that line names the caller "{cn}" escaped'))
def _names_caller(scenario: Scenario, cn: str) -> None:
    assert f'caller="{cn}"' in scenario.notes["line"], scenario.notes["line"]
