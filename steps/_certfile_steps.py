"""Steps for the certificate-file scenarios of features/security.feature: the real
``jobmgr-server`` started with key, certificate or CA files anyone could read or change, or
that cannot be read at all, must refuse to start and leave nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from pytest_bdd import given, parsers, then, when

from ._hostile_server import alive
from ._hostile_steps import Hostile
from .fixtures_pki import ScenarioPKI
from .fixtures_server import cgroup_dirs, program, program_env

# ---- certificate files ------------------------------------------------------------------------

FILES = {"the key": "server.key", "the certificate": "server.pem", "the CA": "ca.pem"}


@given(
    parsers.re(
        "the scenario's certificate files, with (?P<file>the key|the certificate|the CA) "
        "(?P<problem>.+)"
    )
)
def _unsafe_files(hostile: Hostile, scenario_pki: ScenarioPKI, tmp_path: Path, file: str,
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
    hostile.notes.update(files=out, target=target)


@when("the jobmgr-server program is started with them")
def _start_unsafe(hostile: Hostile, tmp_path: Path, server_cgroup_parent: str) -> None:
    files: Path = hostile.notes["files"]
    state = tmp_path / "refused-state"
    parent = f"{server_cgroup_parent}-refused"
    argv = [
        *program("jobmgr-server"), "--host", "localhost", "--port", "0",
        "--ca", str(files / "ca.pem"), "--cert", str(files / "server.pem"),
        "--key", str(files / "server.key"), "--state-dir", str(state),
        "--cgroup-parent", parent,
    ]  # fmt: skip
    began = time.monotonic()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=program_env(), cwd=tmp_path
    )
    assert process.stdout is not None
    first = _first_line(process.stdout, 10.0)  # b"" once it exits; a line if it serves
    kept_running = bool(first)  # anything on stdout means it got as far as serving
    if not kept_running:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            kept_running = True
    if kept_running:
        process.send_signal(signal.SIGTERM)  # stop it the way an operator would
    rest, stderr = process.communicate(timeout=60)
    stdout = first + rest
    hostile.notes.update(
        code=process.returncode, took=time.monotonic() - began, kept_running=kept_running,
        stdout=stdout.decode(errors="replace"), stderr=stderr.decode(errors="replace"),
        state=state, parent=parent,
    )  # fmt: skip


@then(parsers.parse('it exits with status 1 within 10 seconds, saying in one line "{says}"'))
def _refused(hostile: Hostile, says: str) -> None:
    notes = hostile.notes
    assert not notes["kept_running"], (
        f"jobmgr-server started serving with {notes['target'].name} unsafe: {notes['stdout']!r}"
    )
    lines = [line for line in notes["stderr"].splitlines() if line.strip()]
    assert notes["code"] == 1, (notes["code"], lines)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert says in lines[0] and notes["target"].name in lines[0], lines[0]


@then("it left no launcher, no cgroup and no open port behind")
def _left_nothing(hostile: Hostile) -> None:
    notes = hostile.notes
    assert "listening" not in notes["stdout"] or notes["kept_running"]
    assert cgroup_dirs(notes["parent"]) == [], "a refused start left a cgroup"
    pid_file = notes["state"] / "launcher.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        assert not alive(pid), "a refused start left its launcher running"


def _first_line(stream: Any, timeout: float) -> bytes:
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else b""
