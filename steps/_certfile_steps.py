"""Steps for the certificate-file scenarios of features/security.feature: the real
``jobmgr-server`` started with key, certificate or CA files anyone could read or change, or
that cannot be read at all, must refuse to start and leave nothing behind."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from pytest_bdd import given, parsers, then, when

from harness.cgroups import parent_dirs
from harness.pki import ScenarioPKI, ServerFiles
from harness.procs import alive
from harness.server import ServerDidNotStart, ServerProcess

from .fixtures_scenario import Scenario

# ---- certificate files ------------------------------------------------------------------------

FILES = {"the key": "server.key", "the certificate": "server.pem", "the CA": "ca.pem"}


@given(
    parsers.re(
        "the scenario's certificate files, with (?P<file>the key|the certificate|the CA) "
        "(?P<problem>.+)"
    )
)
def _unsafe_files(scenario: Scenario, scenario_pki: ScenarioPKI, tmp_path: Path, file: str,
                  problem: str) -> None:  # fmt: skip
    out = tmp_path / "server-files"
    out.mkdir()
    shutil.copy(scenario_pki.ca_path, out / "ca.pem")
    shutil.copy(scenario_pki.server.cert_path, out / "server.pem")
    shutil.copy(scenario_pki.server.key_path, out / "server.key")
    for name, safe in (("ca.pem", 0o644), ("server.pem", 0o644), ("server.key", 0o600)):
        os.chmod(out / name, safe)
    target = out / FILES[file]
    mode = re.search(r"mode (0[0-7]{3})", problem)
    if mode:
        os.chmod(target, int(mode.group(1), 8))
    elif problem == "owned by nobody":
        os.chown(target, 65534, 65534)
    elif problem == "a directory":
        target.unlink()
        target.mkdir()
    elif problem == "an empty file":
        target.write_bytes(b"")
    elif problem == "a dangling symlink":
        target.unlink()
        target.symlink_to(out / "gone" / target.name)
    else:
        raise AssertionError(f"unknown problem {problem!r}")
    scenario.notes.update(files=out, target=target)


@when("the jobmgr-server program is started with them")
def _start_unsafe(scenario: Scenario, tmp_path: Path, server_cgroup_parent: str) -> None:
    workdir = tmp_path / "refused"
    workdir.mkdir()
    files: Path = scenario.notes["files"]
    server = ServerProcess(ServerFiles.in_dir(files), workdir, f"{server_cgroup_parent}-refused")
    try:
        server.start(timeout=10.0)  # the refusal must come within 10 seconds
        kept_running = True  # it got as far as serving
    except ServerDidNotStart:
        kept_running = False
    code = server.terminate() if kept_running else server.wait(10)  # as an operator would
    scenario.notes.update(
        code=code, kept_running=kept_running,
        stdout=server.stdout, stderr=server.stderr, server=server,
    )  # fmt: skip


@then(parsers.parse('it exits with status 1 within 10 seconds, saying in one line "{says}"'))
def _refused(scenario: Scenario, says: str) -> None:
    notes = scenario.notes
    assert not notes["kept_running"], (
        f"jobmgr-server started serving with {notes['target'].name} unsafe: {notes['stdout']!r}"
    )
    lines = [line for line in notes["stderr"].splitlines() if line.strip()]
    assert notes["code"] == 1, (notes["code"], lines)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert says in lines[0] and notes["target"].name in lines[0], lines[0]


@then("it left no launcher, no cgroup and no open port behind")
def _left_nothing(scenario: Scenario) -> None:
    notes = scenario.notes
    server: ServerProcess = notes["server"]
    assert "listening" not in notes["stdout"] or notes["kept_running"]
    assert parent_dirs(server.cgroup_parent) == [], "a refused start left a cgroup"
    pid_file = server.state_dir / "launcher.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        assert not alive(pid), "a refused start left its launcher running"
