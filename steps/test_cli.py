"""Steps for features/cli.feature: the real programs, as subprocesses."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from pytest_bdd import given, parsers, scenarios, then, when

from harness.cgroups import parent_dirs
from harness.pki import ScenarioPKI, ServerFiles
from harness.programs import program, program_env, run_program
from jobmgr import pki

from ._cli_steps import ran
from .fixtures_scenario import Scenario
from .fixtures_server import LaunchServer

scenarios("cli.feature")

# ---- when -------------------------------------------------------------------------------------


@when("the admin points jobmgr-client at a port where nothing listens")
def _nothing_listens(scenario: Scenario, scenario_pki: ScenarioPKI) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    admin = scenario_pki.client("admin")
    scenario.notes["ran"] = run_program(
        "jobmgr-client", "--port", str(port), "--ca", str(scenario_pki.ca_path),
        "--cert", str(admin.cert_path), "--key", str(admin.key_path), "list",
    )  # fmt: skip


@when("the server is sent SIGTERM")
def _sigterm(scenario: Scenario) -> None:
    scenario.program.send_signal(signal.SIGTERM)


@when("jobmgr-server is started as user nobody")
def _as_nobody(scenario: Scenario) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed")
    # The checkout may sit where nobody cannot enter (under /root, in a 0700 temp dir): with
    # the read-and-search capability, and no other, nobody can load the program from it.
    argv = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    argv += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    argv += [*program("jobmgr-server"), "--port", "0"]
    scenario.notes["ran"] = subprocess.run(
        argv, capture_output=True, env=program_env(), timeout=30, check=False, cwd="/"
    )


@when(parsers.parse("jobmgr-certs {arguments} is run"))
def _certs_run(scenario: Scenario, tmp_path: Path, arguments: str) -> None:
    made = tmp_path / "certs-made"
    scenario.notes["keys_before"] = _keys(made)
    args = [str(made) if arg == "certs" else arg for arg in shlex.split(arguments)]
    scenario.notes["ran"] = run_program("jobmgr-certs", *args)


@when(parsers.parse("I ask {name} for --help"))
def _help(scenario: Scenario, name: str) -> None:
    scenario.notes["ran"] = run_program(name, "--help")


@given("the jobmgr-server program is running with the certificates in certs")
def _server_with_made_certs(
    launch_server: LaunchServer, scenario: Scenario, tmp_path: Path
) -> None:
    scenario.server = launch_server(files=ServerFiles.in_dir(tmp_path / "certs-made"))


@when("the admin lists jobs using the certificates in certs and --host 127.0.0.1")
def _list_with_made_certs(scenario: Scenario, tmp_path: Path) -> None:
    made = tmp_path / "certs-made"
    scenario.notes["ran"] = run_program(
        "jobmgr-client", "--host", "127.0.0.1", "--port", str(scenario.server.port),
        "--ca", str(made / "ca.pem"), "--cert", str(made / "client_admin.pem"),
        "--key", str(made / "client_admin.key"), "list",
    )  # fmt: skip


# ---- then -------------------------------------------------------------------------------------


@then(
    parsers.parse(
        'the JSON says state "{state}", exit_code {code:d} and owner the {kind} certificate\'s '
        "Subject"
    )
)
def _json_says(scenario: Scenario, state: str, code: int, kind: str) -> None:
    fields = json.loads(ran(scenario).stdout)
    owner = scenario.program.pki.client(kind).subject
    assert (fields["state"], fields["exit_code"], fields["owner"]) == (state, code, owner)
    assert fields["id"] == scenario.job and fields["terminated"] is True, fields


@then(parsers.parse("the server exits 0 within {seconds:d} seconds"))
def _server_exits(scenario: Scenario, seconds: int) -> None:
    server = scenario.program
    assert server.wait(seconds) == 0, server.stderr
    assert "stopping running jobs" in server.stderr, server.stderr


@then("no cgroup of its jobs is left")
def _no_cgroups(scenario: Scenario) -> None:
    assert parent_dirs(scenario.program.cgroup_parent) == []


@then(
    "certs holds ca, server, client_admin and client_user certificates with keys readable "
    "only by root"
)
def _certs_written(tmp_path: Path) -> None:
    made = tmp_path / "certs-made"
    names = sorted(p.name for p in made.iterdir())
    assert names == sorted(f"{s}.{e}" for s in pki.FILE_STEMS for e in ("pem", "key")), names
    for key in made.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key


@then(parsers.parse('client_admin.pem has Subject "{admin}" and client_user.pem "{user}"'))
def _subjects(tmp_path: Path, admin: str, user: str) -> None:
    made = tmp_path / "certs-made"
    for name, want in (("client_admin.pem", admin), ("client_user.pem", user)):
        cert = x509.load_pem_x509_certificate((made / name).read_bytes())
        assert cert.subject.rfc4514_string() == ",".join(reversed(want.split(","))), cert.subject


@then("server.pem is valid for localhost, 127.0.0.1 and ::1")
def _server_sans(tmp_path: Path) -> None:
    cert = x509.load_pem_x509_certificate((tmp_path / "certs-made" / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert names == ["localhost", "127.0.0.1", "::1"], names


@then("no key in certs has changed")
def _keys_kept(scenario: Scenario, tmp_path: Path) -> None:
    assert _keys(tmp_path / "certs-made") == scenario.notes["keys_before"]


@then("every key in certs has changed")
def _keys_replaced(scenario: Scenario, tmp_path: Path) -> None:
    before, after = scenario.notes["keys_before"], _keys(tmp_path / "certs-made")
    assert before.keys() == after.keys()
    assert all(before[name] != after[name] for name in before)


def _keys(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.glob("*.key")} if directory.exists() else {}
