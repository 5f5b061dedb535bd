"""Running our console scripts (jobmgr-server, jobmgr-client, jobmgr-certs) from this checkout,
each in an environment that makes it set up TLS for itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def program(name: str) -> list[str]:
    """How to run one of our console scripts: installed next to python, else via -m."""
    script = shutil.which(name, path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-m", f"jobmgr.cli.{name.removeprefix('jobmgr-')}"]


def program_env() -> dict[str, str]:
    """The environment for our programs: importable from the checkout, and without the TLS
    setting this process made, so each program must make it itself."""
    env = dict(os.environ)
    env.pop("GRPC_SSL_CIPHER_SUITES", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_program(
    name: str,
    *args: str,
    timeout: float = 60.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one of our programs to completion, capturing its stdout and stderr as bytes;
    ``env`` adds variables to its environment."""
    return subprocess.run(
        [*program(name), *args],
        capture_output=True,
        env={**program_env(), **(env or {})},
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
