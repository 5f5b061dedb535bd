"""Steps for features/cli.feature: the real programs, as subprocesses."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from pytest_bdd import given, parsers, scenarios, then, when

from jobmgr import pki

from ._cli_steps import *  # noqa: F403  # the shared steps
from ._cli_steps import cli_server as _server
from ._cli_steps import ran as _ran
from ._cli_steps import run_client, with_job
from ._grpc_steps import *  # noqa: F403  # the shared steps
from ._grpc_steps import ApiScenario, eventually
from ._identity_subject import subject_of
from .fixtures_pki import ScenarioPKI
from .fixtures_server import (
    ServerFiles,
    StartServerProcess,
    cgroup_dirs,
    program,
    program_env,
    run_program,
)

scenarios("cli.feature")

# ---- when -------------------------------------------------------------------------------------


@when("the admin points jobmgr-client at a port where nothing listens")
def _nothing_listens(api: ApiScenario, scenario_pki: ScenarioPKI) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    admin = scenario_pki.client("admin")
    api.notes["ran"] = run_program(
        "jobmgr-client", "--port", str(port), "--ca", str(scenario_pki.ca_path),
        "--cert", str(admin.cert_path), "--key", str(admin.key_path), "list",
    )  # fmt: skip


@when("the server is sent SIGTERM")
def _sigterm(api: ApiScenario) -> None:
    process = _server(api).process
    process.terminate()


@when("jobmgr-server is started as user nobody")
def _as_nobody(api: ApiScenario) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed")
    argv = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    argv += [*program("jobmgr-server"), "--port", "0"]
    api.notes["ran"] = subprocess.run(
        argv, capture_output=True, env=program_env(), timeout=30, check=False, cwd="/"
    )


@when(parsers.parse("jobmgr-certs {arguments} is run"))
def _certs_run(api: ApiScenario, tmp_path: Path, arguments: str) -> None:
    made = tmp_path / "certs-made"
    api.notes["keys_before"] = _keys(made)
    args = [str(made) if arg == "certs" else arg for arg in shlex.split(arguments)]
    api.notes["ran"] = run_program("jobmgr-certs", *args)


@when(parsers.parse("I ask {name} for --help"))
def _help(api: ApiScenario, name: str) -> None:
    api.notes["ran"] = run_program(name, "--help")


@given("the jobmgr-server program is running with the certificates in certs")
def _server_with_made_certs(
    start_server_process: StartServerProcess, api: ApiScenario, tmp_path: Path
) -> None:
    made = tmp_path / "certs-made"
    files = ServerFiles(made / "ca.pem", made / "server.pem", made / "server.key")
    api.notes["server_process"] = start_server_process(files)


@when("the admin lists jobs using the certificates in certs and --host 127.0.0.1")
def _list_with_made_certs(api: ApiScenario, tmp_path: Path) -> None:
    made = tmp_path / "certs-made"
    api.notes["ran"] = run_program(
        "jobmgr-client", "--host", "127.0.0.1", "--port", str(_server(api).port),
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
def _json_says(api: ApiScenario, state: str, code: int, kind: str) -> None:
    fields = json.loads(_ran(api).stdout)
    owner = subject_of(_server(api).pki.client(kind))
    assert (fields["state"], fields["exit_code"], fields["owner"]) == (state, code, owner)
    assert fields["id"] == api.job and fields["terminated"] is True, fields


@then(parsers.parse("the server exits 0 within {seconds:d} seconds"))
def _server_exits(api: ApiScenario, seconds: int) -> None:
    server = _server(api)
    assert server.process.wait(seconds) == 0, server.stderr
    assert "stopping running jobs" in server.stderr, server.stderr


@then("no cgroup of its jobs is left")
def _no_cgroups(api: ApiScenario) -> None:
    assert cgroup_dirs(_server(api).cgroup_parent) == []


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
def _keys_kept(api: ApiScenario, tmp_path: Path) -> None:
    assert _keys(tmp_path / "certs-made") == api.notes["keys_before"]


@then("every key in certs has changed")
def _keys_replaced(api: ApiScenario, tmp_path: Path) -> None:
    before, after = api.notes["keys_before"], _keys(tmp_path / "certs-made")
    assert before.keys() == after.keys()
    assert all(before[name] != after[name] for name in before)


def _keys(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.glob("*.key")} if directory.exists() else {}


# ---- contexts and the environment -------------------------------------------------------------


def _config_env(api: ApiScenario, tmp_path: Path) -> dict[str, str]:
    """The environment that points jobmgr-client at the scenario's config file (if any)."""
    config_home = tmp_path / "xdg-config"
    config_home.mkdir(exist_ok=True)
    return {"XDG_CONFIG_HOME": str(config_home)}


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "xdg-config" / "jobmgr" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@given(
    parsers.parse(
        'a config file whose current context "{name}" reaches it with the {kind} certificate'
    )
)
def _config_with_context(api: ApiScenario, tmp_path: Path, name: str, kind: str) -> None:
    server = _server(api)
    pair = server.pki.client(kind)
    path = _config_file(tmp_path)
    # Paths relative to the file, and a ~ that expands: both as an operator writes them.
    shutil.copy(server.pki.ca_path, path.parent / "ca.pem")
    home = tmp_path / "home"
    (home / ".jobmgr").mkdir(parents=True, exist_ok=True)
    shutil.copy(pair.cert_path, home / ".jobmgr" / "me.pem")
    shutil.copy(pair.key_path, home / ".jobmgr" / "me.key")
    api.notes["home"] = str(home)
    path.write_text(
        f'current = "{name}"\n\n[contexts.{name}]\naddress = "localhost:{server.port}"\n'
        'ca = "ca.pem"\ncert = "~/.jobmgr/me.pem"\nkey = "~/.jobmgr/me.key"\n'
    )


@given(parsers.parse('the config file also has a context "{name}" at {address}'))
def _another_context(tmp_path: Path, name: str, address: str) -> None:
    path = _config_file(tmp_path)
    path.write_text(path.read_text() + f'\n[contexts.{name}]\naddress = "{address}"\n')


def _run_plain(
    api: ApiScenario, tmp_path: Path, arguments: list[str], env: dict[str, str] | None = None
) -> None:
    """jobmgr-client with no flags of the scenario's: the config file and ``env`` only, run
    in an empty directory (so that no ./certs is found)."""
    empty = tmp_path / "elsewhere"
    empty.mkdir(exist_ok=True)
    environment = {**_config_env(api, tmp_path), "HOME": api.notes.get("home", str(empty))}
    environment.update(env or {})
    api.notes["ran"] = run_program("jobmgr-client", *arguments, env=environment, cwd=empty)


@when(parsers.re(r"^jobmgr-client (?P<arguments>.+?) is run in an empty directory with no flags$"))
def _run_in_empty_dir(api: ApiScenario, tmp_path: Path, arguments: str) -> None:
    _run_plain(api, tmp_path, shlex.split(arguments))


@when(parsers.re(r"^jobmgr-client (?P<arguments>context .+|--context .+) is run$"))
def _run_context(api: ApiScenario, tmp_path: Path, arguments: str) -> None:
    _run_plain(api, tmp_path, shlex.split(arguments))


@when(
    parsers.re(
        r"^jobmgr-client (?P<arguments>.+) is run with JOBMGR_CERT and JOBMGR_KEY naming the "
        r"(?P<kind>\S+) certificate$"
    )
)
def _run_with_cert_env(api: ApiScenario, tmp_path: Path, arguments: str, kind: str) -> None:
    pair = _server(api).pki.client(kind)
    env = {"JOBMGR_CERT": str(pair.cert_path), "JOBMGR_KEY": str(pair.key_path)}
    _run_plain(api, tmp_path, shlex.split(arguments), env)


@when(
    "jobmgr-client list is run with JOBMGR_ADDR naming a port where nothing listens, and --port "
    "naming the server's"
)
def _run_with_addr_env(api: ApiScenario, tmp_path: Path) -> None:
    env = {"JOBMGR_ADDR": f"localhost:{_free_port()}"}
    _run_plain(api, tmp_path, ["--port", str(_server(api).port), "list"], env)


@when("jobmgr-client list is run with --cert and no --key")
def _cert_without_key(api: ApiScenario, tmp_path: Path) -> None:
    server = _server(api)
    admin = server.pki.client("admin")
    flags = ["--port", str(server.port), "--ca", str(server.pki.ca_path)]
    _run_plain(api, tmp_path, [*flags, "--cert", str(admin.cert_path), "list"])


@when("the admin runs jobmgr-client with another CA's certificate as --ca")
def _other_ca(api: ApiScenario) -> None:
    server = _server(api)
    args = server.client_args("admin")
    args[args.index("--ca") + 1] = str(server.pki.other_ca_path)
    api.notes["ran"] = run_program("jobmgr-client", *args, "list")


def _free_port() -> int:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("localhost", 0))
        port: int = probe.getsockname()[1]
    return port


# ---- run's endings ----------------------------------------------------------------------------


@when(parsers.re(r"the admin pipes jobmgr-client (?P<arguments>.+) into a reader of one line"))
def _piped_into_head(api: ApiScenario, arguments: str) -> None:
    argv = [*program("jobmgr-client"), *_server(api).client_args("admin"), *shlex.split(arguments)]
    began = time.monotonic()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=program_env()
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()  # `| head -1`: one line, then the reader goes
    process.stdout.close()
    stderr = process.stderr.read()
    code = process.wait(60)
    api.notes["ran"] = subprocess.CompletedProcess(argv, code, first, stderr)
    api.notes["ran_seconds"] = time.monotonic() - began
    assert first == b"y\n", first
    ids = re.findall(r"job ([0-9a-f-]{36})", stderr.decode())
    assert ids, stderr
    api.job = ids[0]


@when("the follower gets SIGTERM")
def _follower_sigterm(api: ApiScenario) -> None:
    api.notes["follower"].process.send_signal(signal.SIGTERM)


@then(parsers.parse("the follower's stderr names the server's --port in \"{text}\""))
def _hint_has_port(api: ApiScenario, text: str) -> None:
    stderr = bytes(api.notes["follower"].stderr).decode()
    hint = f"--port {_server(api).port}"
    assert re.search(re.escape(hint) + r".* " + re.escape(with_job(api, text)), stderr), stderr


# ---- resume -----------------------------------------------------------------------------------


@when(parsers.parse('the follower has printed "{text}"'))
def _has_printed(api: ApiScenario, text: str) -> None:
    follower = api.notes["follower"]
    eventually(lambda: text.encode() in follower.stdout, 30, f"the follower to print {text!r}")


@then(parsers.parse('the follower\'s stdout is lines "line {first:d}" to "line {last:d}"'))
def _lines(api: ApiScenario, first: int, last: int) -> None:
    got = bytes(api.notes["follower"].stdout).decode()
    assert got == "".join(f"line {i}\n" for i in range(first, last + 1)), got[-300:]


# ---- ids and listing --------------------------------------------------------------------------


@when("the admin runs jobmgr-client status with the first 8 characters of a job's id")
def _status_by_prefix(api: ApiScenario) -> None:
    ids: list[str] = api.notes["ids"]
    unique = next(i for i in ids if sum(j.startswith(i[:8]) for j in ids) == 1)
    api.job = unique
    run_client(api, "admin", f"status {unique[:8]}")


@then("its stdout contains the job's whole id")
def _whole_id(api: ApiScenario) -> None:
    assert api.job in _ran(api).stdout.decode()


@when("the admin runs jobmgr-client status with a 1-character prefix that two jobs share")
def _status_by_shared_prefix(api: ApiScenario) -> None:
    firsts = [i[0] for i in api.notes["ids"]]  # 17 jobs, 16 hex digits: two share one
    shared = next(c for c in firsts if firsts.count(c) > 1)
    run_client(api, "admin", f"status {shared}")


@then("its stdout is the two jobs' ids, one per line")
def _two_ids(api: ApiScenario) -> None:
    assert _ran(api).stdout.decode().split("\n") == [*api.notes["started"], ""]


@when("the admin stops both jobs with one jobmgr-client stop")
def _stop_both(api: ApiScenario) -> None:
    first, second = api.notes["started"]
    run_client(api, "admin", f"stop {first[:8]} {second}")


@then('its stdout has a line "stopped job ...: STOPPED by signal 15" for each of them')
def _stopped_lines(api: ApiScenario) -> None:
    lines = _ran(api).stdout.decode().splitlines()
    assert lines == [f"stopped job {i}: STOPPED by signal 15" for i in api.notes["started"]]


@when("the admin runs jobmgr-client status --json with both ids")
def _status_both(api: ApiScenario) -> None:
    run_client(api, "admin", "status --json " + " ".join(api.notes["started"]))


@then(parsers.parse("the JSON is an array of {count:d} jobs, both {state}"))
def _json_array(api: ApiScenario, count: int, state: str) -> None:
    shown = json.loads(_ran(api).stdout)
    assert [job["id"] for job in shown] == api.notes["started"]
    assert len(shown) == count and {job["state"] for job in shown} == {state}, shown


# ---- completion -------------------------------------------------------------------------------


@when("jobmgr-client completion bash is run")
def _completion(api: ApiScenario) -> None:
    api.notes["ran"] = run_program("jobmgr-client", "completion", "bash")


@then(parsers.parse('bash, given that script, completes "{line}" to "{words}"'))
def _bash_completes(api: ApiScenario, tmp_path: Path, line: str, words: str) -> None:
    script = tmp_path / "completion.bash"
    script.write_bytes(_ran(api).stdout)
    test = (
        f"source {shlex.quote(str(script))}; COMP_WORDS=({line}); "
        f"COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMP_LINE={shlex.quote(line)}; "
        'COMP_POINT=${#COMP_LINE}; _shtab_jobmgr_client; echo "${COMPREPLY[*]}"'
    )
    done = subprocess.run(["bash", "-c", test], capture_output=True, timeout=30, check=False)
    assert done.stdout.decode().strip() == words, done
