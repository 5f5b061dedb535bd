"""cgroup v2 driver against a directory tree that behaves like a cgroup2 mount, and version
detection from fake mountinfo files."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobmgr.worker import Limits
from jobmgr.worker.cgroups import CgroupError, CgroupsUnavailable, _devices, _kernfs, v1, v2
from jobmgr.worker.cgroups._mounts import detect_driver
from tests._spawn_in_cgroup import spawn as spawn_in

MiB = 1024 * 1024
DEVICES = [(254, 0), (8, 16)]

# What a cgroup directory holds once a controller is enabled for it (values as a fresh kernel
# cgroup shows them). The core files exist whatever is enabled.
CORE_FILES = {
    "cgroup.procs": "",
    "cgroup.subtree_control": "",
    "cgroup.kill": "",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
}
CONTROLLER_FILES = {
    "cpu": {"cpu.max": "max 100000", "cpu.weight": "100"},
    "memory": {
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.current": "0",
        "memory.peak": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        "memory.oom.group": "0",
    },
    "io": {"io.max": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
}
ROOT_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"

_real_mkdir = os.mkdir
_real_rmdir = os.rmdir
_real_write_text = _kernfs.write_text


class FakeCgroup2:
    """A tmp directory imitating a cgroup2 mount, for the calls the driver makes.

    Like the kernel it fills a new cgroup directory with the files of the controllers its parent
    delegates, keeps one io.max rule per device, kills on a cgroup.kill write, drops an exited
    process from cgroup.procs, and refuses to remove a cgroup with processes or children.
    """

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, controllers: str) -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []
        root.mkdir()
        self._populate(root, controllers)
        monkeypatch.setattr(os, "mkdir", self._mkdir)
        monkeypatch.setattr(os, "rmdir", self._rmdir)
        # The driver writes through _kernfs.write_text, imported into v2 by name as well.
        monkeypatch.setattr(_kernfs, "write_text", self._write)
        monkeypatch.setattr(v2, "write_text", self._write)
        monkeypatch.setattr(_devices, "throttle_devices", lambda: list(DEVICES))
        monkeypatch.setattr(_devices, "root_device", lambda: DEVICES[0])

    def spawn(self, cgroup: v2.Cgroup, *argv: str) -> subprocess.Popen[bytes]:
        """Start a process inside ``cgroup``; it leaves cgroup.procs on exit."""
        proc = spawn_in(cgroup, *argv)

        def leave_on_exit() -> None:
            proc.wait()
            procs = Path(cgroup.leaf, "cgroup.procs")
            pids = procs.read_text().split()
            procs.write_text("".join(f"{p}\n" for p in pids if p != str(proc.pid)))

        threading.Thread(target=leave_on_exit, daemon=True).start()
        return proc

    def _owns(self, path: str | os.PathLike[str]) -> bool:
        return Path(path).resolve().is_relative_to(self.root.resolve())

    def _mkdir(self, path: str, mode: int = 0o777, **kwargs: object) -> None:
        _real_mkdir(path, mode, **kwargs)  # type: ignore[arg-type]
        if self._owns(path):
            parent = Path(path).parent
            self._populate(Path(path), (parent / "cgroup.subtree_control").read_text())

    def _populate(self, path: Path, controllers: str) -> None:
        for name, text in CORE_FILES.items():
            (path / name).write_text(text)
        (path / "cgroup.controllers").write_text(controllers)
        for controller in controllers.split():
            for name, text in CONTROLLER_FILES.get(controller, {}).items():
                (path / name).write_text(text)

    def _rmdir(self, path: str, **kwargs: object) -> None:
        p = Path(path)
        if self._owns(p) and p.is_dir():
            if (p / "cgroup.procs").read_text().strip() or any(c.is_dir() for c in p.iterdir()):
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
            for f in p.iterdir():
                f.unlink()
        _real_rmdir(path, **kwargs)  # type: ignore[arg-type]

    def _write(self, path: str, text: str) -> None:
        if not self._owns(path) or not os.path.exists(path):
            _real_write_text(path, text)  # raises as the kernel would for a missing file
            return
        self.writes.append((os.path.relpath(path, self.root), text))
        p = Path(path)
        if p.name == "cgroup.subtree_control":
            available = (p.parent / "cgroup.controllers").read_text().split()
            enabled = set(p.read_text().split())
            for token in text.split():
                if token[1:] not in available:
                    raise CgroupError(f"cannot write {text!r} to {path}: No such file or directory")
                enabled.add(token[1:])
            p.write_text(" ".join(sorted(enabled)))
        elif p.name == "io.max":
            device, _, _ = text.partition(" ")
            rules = [r for r in p.read_text().splitlines() if not r.startswith(device + " ")]
            p.write_text("".join(f"{r}\n" for r in [*rules, text]))
        elif p.name == "cgroup.kill" and text == "1":
            members = [d / "cgroup.procs" for d in [p.parent, *p.parent.rglob("*")] if d.is_dir()]
            for pid in " ".join(m.read_text() for m in members).split():
                # As in the kernel, a member that is already dead (listed until the thread
                # that reaps it catches up) is no error.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        else:
            p.write_text(text)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroup2:
    return FakeCgroup2(tmp_path / "cgroup2", monkeypatch, ROOT_CONTROLLERS)


@pytest.fixture
def driver(fake: FakeCgroup2) -> Iterator[v2.Driver]:
    d = v2.Driver(root=str(fake.root), parent="jobmgr")
    yield d
    for name in d.existing():
        d.open(name).destroy()
    d.remove_parent()


def _read(cgroup: v2.Cgroup, filename: str) -> str:
    return Path(cgroup.path, filename).read_text().strip()


# ---- detection ---------------------------------------------------------------------------------


def _mountinfo(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        + "".join(f"{line}\n" for line in lines)
    )
    return str(path)


def test_v2_is_chosen_when_cgroup2_offers_every_job_controller(
    tmp_path: Path, fake: FakeCgroup2
) -> None:
    info = _mountinfo(
        tmp_path, f"31 23 0:28 / {fake.root} rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate"
    )
    driver = detect_driver("jobmgr", mountinfo=info)
    assert isinstance(driver, v2.Driver)
    assert (driver.version, driver.root, driver.parent) == (2, str(fake.root), "jobmgr")


def test_mount_points_are_resolved_under_root_override(tmp_path: Path) -> None:
    root = tmp_path / "chroot"
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu io memory pids\n")
    info = _mountinfo(tmp_path, "31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw")
    driver = detect_driver("jobmgr", mountinfo=info, root_override=str(root))
    assert isinstance(driver, v2.Driver)
    assert driver.root == str(root / "sys/fs/cgroup")


def test_v1_is_chosen_with_combined_hierarchies_when_cgroup2_lacks_controllers(
    tmp_path: Path,
) -> None:
    unified = tmp_path / "cg/unified"
    unified.mkdir(parents=True)
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    cg = tmp_path / "cg"
    info = _mountinfo(
        tmp_path,
        f"32 31 0:29 / {cg}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
        f"33 31 0:30 / {cg}/memory rw - cgroup cgroup rw,memory",
        f"34 31 0:31 / {cg}/blkio rw - cgroup cgroup rw,blkio",
        f"35 31 0:32 / {cg}/my\\040pids rw - cgroup cgroup rw,pids",
        f"36 31 0:33 / {cg}/systemd rw - cgroup cgroup rw,xattr,name=systemd",
        f"38 31 0:35 / {cg}/devices rw - cgroup cgroup rw,devices",
        f"37 31 0:34 / {unified} rw - cgroup2 cgroup2 rw",
    )
    driver = detect_driver("jobmgr", mountinfo=info)
    assert isinstance(driver, v1.Driver)
    assert driver.version == 1
    assert driver.mounts == {
        "cpu": f"{cg}/cpu,cpuacct",
        "cpuacct": f"{cg}/cpu,cpuacct",
        "memory": f"{cg}/memory",
        "blkio": f"{cg}/blkio",
        "pids": f"{cg}/my pids",
        "devices": f"{cg}/devices",
    }
    # cpu and cpuacct share a hierarchy, so a job has one directory there, not two.
    assert len(driver.open("job").hierarchy_dirs) == 5


def test_detection_names_what_is_missing_when_neither_version_works(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("cpu memory\n")
    info = _mountinfo(
        tmp_path,
        f"33 31 0:30 / {tmp_path}/memory rw - cgroup cgroup rw,memory",
        f"37 31 0:34 / {unified} rw - cgroup2 cgroup2 rw",
    )
    with pytest.raises(CgroupsUnavailable) as error:
        detect_driver("jobmgr", mountinfo=info)
    assert f"cgroup2 at {unified} lacks io, pids" in str(error.value)
    assert "cgroup v1 has no hierarchy for cpu, cpuacct, blkio, pids, devices" in str(error.value)


def test_detection_fails_clearly_without_any_cgroup_mount(tmp_path: Path) -> None:
    with pytest.raises(CgroupsUnavailable, match="no cgroup2 filesystem is mounted"):
        detect_driver("jobmgr", mountinfo=_mountinfo(tmp_path))


# ---- the v2 driver -----------------------------------------------------------------------------


def test_controllers_are_delegated_down_to_the_job(fake: FakeCgroup2) -> None:
    driver = v2.Driver(root=str(fake.root), parent="team/jobmgr")
    cg = driver.create("job", Limits())
    try:
        for level in ("", "team", "team/jobmgr"):
            enabled = (fake.root / level / "cgroup.subtree_control").read_text().split()
            assert enabled == ["cpu", "io", "memory", "pids"]
        assert _read(cg, "cgroup.controllers") == "cpu io memory pids"
    finally:
        cg.destroy()
        driver.remove_parent()


def test_limits_are_written_in_kernel_units(driver: v2.Driver) -> None:
    limits = Limits(cpu=1.5, memory_bytes=64 * MiB, io_read_bps=MiB, io_write_bps=0, pids=10)
    cg = driver.create("job", limits)

    assert _read(cg, "cpu.max") == "150000 100000"
    assert _read(cg, "memory.max") == str(64 * MiB)
    assert _read(cg, "memory.swap.max") == "0"
    assert _read(cg, "pids.max") == "10"
    assert _read(cg, "io.max").splitlines() == [
        f"254:0 rbps={MiB} wbps=max",
        f"8:16 rbps={MiB} wbps=max",
    ]


def test_unlimited_limits_write_the_unlimited_values(driver: v2.Driver, fake: FakeCgroup2) -> None:
    cg = driver.create("job", Limits(cpu=0, memory_bytes=0, io_read_bps=0, io_write_bps=0, pids=0))

    assert _read(cg, "cpu.max") == "max 100000"
    assert _read(cg, "memory.max") == "max"
    assert _read(cg, "memory.swap.max") == "max"
    assert _read(cg, "pids.max") == "max"
    assert _read(cg, "io.max") == ""
    assert not [w for w in fake.writes if w[0].endswith("io.max")]


def test_a_kernel_without_swap_accounting_still_gets_a_memory_limit(
    driver: v2.Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CONTROLLER_FILES, "memory", {"memory.max": "max"})
    cg = driver.create("job", Limits(memory_bytes=64 * MiB))
    assert _read(cg, "memory.max") == str(64 * MiB)


def test_a_missing_controller_fails_creation_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCgroup2(tmp_path / "cgroup2", monkeypatch, "cpu memory pids")
    driver = v2.Driver(root=str(fake.root), parent="jobmgr")
    with pytest.raises(CgroupError) as error:
        driver.create("job", Limits())
    assert f"cannot enable io in {fake.root}/cgroup.subtree_control" in str(error.value)
    assert "offers only 'cpu memory pids'" in str(error.value)
    assert "Delegate=yes" in str(error.value)
    assert driver.existing() == []


def test_the_jobs_processes_live_one_level_below_its_limits(driver: v2.Driver) -> None:
    cg = driver.create("job", Limits(memory_bytes=64 * MiB))
    # The leaf is where the init goes and what the job's cgroup namespace shows as the top:
    # no controller is enabled for it, so it has no limit file a job could raise.
    assert cg.procs_files == [f"{cg.path}/job/cgroup.procs"]
    assert Path(cg.leaf, "cgroup.controllers").read_text() == ""
    assert not Path(cg.leaf, "memory.max").exists()
    assert _read(cg, "memory.max") == str(64 * MiB)
    assert _read(cg, "cgroup.subtree_control") == ""


def test_an_oom_kill_takes_the_whole_job(driver: v2.Driver) -> None:
    cg = driver.create("job", Limits())
    assert _read(cg, "memory.oom.group") == "1"


def test_pids_and_kill_cover_cgroups_the_job_made_below_its_own(
    driver: v2.Driver, fake: FakeCgroup2
) -> None:
    cg = driver.create("job", Limits())
    os.mkdir(os.path.join(cg.leaf, "job"))
    inner = v2.Cgroup("inner", cg.leaf)  # its processes go to <job>/job/job
    proc = fake.spawn(inner, "sleep", "100")
    assert cg.pids() == [proc.pid]

    cg.destroy()

    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert not os.path.exists(cg.path)


def test_a_delegated_base_is_vacated_into_a_supervisor_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCgroup2(tmp_path / "cgroup2", monkeypatch, ROOT_CONTROLLERS)
    # What systemd makes for a unit with Delegate=yes: the controllers reach its cgroup.
    slice_ = fake.root / "system.slice"
    unit = slice_ / "jobmgr.service"
    for level in (fake.root, slice_):
        fake._write(str(level / "cgroup.subtree_control"), v2.ENABLE_CONTROLLERS)
        os.mkdir(level / unit.relative_to(level).parts[0])
    (unit / "cgroup.procs").write_text("4242\n")
    moved: list[tuple[str, str]] = []

    def write(path: str, text: str) -> None:
        # As the kernel does: no controller is delegated from a cgroup that holds processes.
        if path == f"{unit}/cgroup.subtree_control" and (unit / "cgroup.procs").read_text():
            raise CgroupError("busy") from OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        if path.endswith("/supervisor/cgroup.procs"):
            moved.append((os.path.relpath(path, unit), text))
            (unit / "cgroup.procs").write_text("")
        fake._write(path, text)

    monkeypatch.setattr(v2, "write_text", write)
    driver = v2.Driver(root=str(fake.root), parent="jobmgr", base="system.slice/jobmgr.service")
    cg = driver.create("job", Limits())

    assert moved == [("supervisor/cgroup.procs", "4242")]
    assert cg.path == f"{unit}/jobmgr/job"


def test_stats_are_parsed_from_kernel_formatted_files(driver: v2.Driver) -> None:
    cg = driver.create("job", Limits())
    Path(cg.path, "cpu.stat").write_text(
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnr_periods 0\n"
    )
    Path(cg.path, "memory.peak").write_text("73728000\n")
    Path(cg.path, "memory.events").write_text(
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"
    )

    stats = cg.stats()
    assert (stats.cpu_seconds, stats.peak_memory_bytes, stats.oom_killed) == (1.5, 73728000, True)


def test_peak_memory_falls_back_to_current_before_linux_5_19(driver: v2.Driver) -> None:
    cg = driver.create("job", Limits())
    Path(cg.path, "memory.peak").unlink()
    Path(cg.path, "memory.current").write_text("4096\n")

    stats = cg.stats()
    assert (stats.peak_memory_bytes, stats.oom_killed) == (4096, False)


def test_kill_all_uses_cgroup_kill(driver: v2.Driver, fake: FakeCgroup2) -> None:
    cg = driver.create("job", Limits())
    proc = fake.spawn(cg, "sleep", "100")
    assert cg.pids() == [proc.pid]

    cg.kill_all()

    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert ("jobmgr/job/cgroup.kill", "1") in fake.writes
    assert cg.pids() == []


def test_kill_all_signals_each_process_without_cgroup_kill(
    driver: v2.Driver, fake: FakeCgroup2
) -> None:
    cg = driver.create("job", Limits())
    Path(cg.path, "cgroup.kill").unlink()
    proc = fake.spawn(cg, "sleep", "100")

    cg.kill_all()

    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert cg.pids() == []


def test_destroy_waits_out_a_busy_cgroup_and_is_idempotent(
    driver: v2.Driver, fake: FakeCgroup2
) -> None:
    cg = driver.create("job", Limits())
    proc = fake.spawn(cg, "sleep", "100")

    cg.destroy()

    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert not os.path.exists(cg.path)
    cg.destroy()


def test_existing_and_remove_parent(driver: v2.Driver, fake: FakeCgroup2) -> None:
    driver.create("a", Limits())
    driver.create("b", Limits())
    assert driver.existing() == ["a", "b"]

    driver.remove_parent()
    assert (fake.root / "jobmgr").is_dir()

    driver.open("a").destroy()
    driver.open("b").destroy()
    driver.remove_parent()
    assert not (fake.root / "jobmgr").exists()
    assert driver.existing() == []
    driver.remove_parent()


def test_parent_dirs_finds_the_parent_until_it_is_removed(
    driver: v2.Driver, fake: FakeCgroup2
) -> None:
    assert driver.parent_dirs() == []
    driver.create("a", Limits())
    assert driver.parent_dirs() == [str(fake.root / "jobmgr")]

    driver.open("a").destroy()
    driver.remove_parent()
    assert driver.parent_dirs() == []


# ---- placement -----------------------------------------------------------------------------


def _own_cgroup(tmp_path: Path, path: str) -> str:
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{path}\n")
    return str(proc)


def test_job_cgroups_go_under_the_cgroup_systemd_delegated(
    tmp_path: Path, fake: FakeCgroup2
) -> None:
    unit = fake.root / "system.slice" / "jobmgr.service"
    os.makedirs(unit / "supervisor")
    try:
        os.setxattr(unit, "trusted.delegate", b"1")
    except OSError as e:
        pytest.skip(f"{tmp_path} takes no trusted.* xattrs: {e.strerror}")
    info = _mountinfo(tmp_path, f"31 23 0:28 / {fake.root} rw - cgroup2 cgroup2 rw")
    # DelegateSubgroup=supervisor: systemd started the server in the unit's supervisor child.
    proc = _own_cgroup(tmp_path, "/system.slice/jobmgr.service/supervisor")
    driver = detect_driver("jobmgr", mountinfo=info, proc_cgroup=proc)
    assert isinstance(driver, v2.Driver)
    assert driver.base == "system.slice/jobmgr.service"
    assert driver.open("job").path == f"{unit}/jobmgr/job"


def test_a_server_in_its_units_own_cgroup_places_jobs_under_the_mount_root(
    tmp_path: Path, fake: FakeCgroup2
) -> None:
    # systemd before 254 (no DelegateSubgroup=) starts the server in the delegated cgroup
    # itself; enabling controllers there would keep systemd from ever starting it again.
    unit = fake.root / "system.slice" / "jobmgr.service"
    os.makedirs(unit)
    try:
        os.setxattr(unit, "trusted.delegate", b"1")
    except OSError as e:
        pytest.skip(f"{tmp_path} takes no trusted.* xattrs: {e.strerror}")
    info = _mountinfo(tmp_path, f"31 23 0:28 / {fake.root} rw - cgroup2 cgroup2 rw")
    proc = _own_cgroup(tmp_path, "/system.slice/jobmgr.service")
    driver = detect_driver("jobmgr", mountinfo=info, proc_cgroup=proc)
    assert isinstance(driver, v2.Driver)
    assert driver.base == ""


def test_without_delegation_job_cgroups_go_under_the_mount_root(
    tmp_path: Path, fake: FakeCgroup2
) -> None:
    os.makedirs(fake.root / "user.slice" / "session-3.scope")
    info = _mountinfo(tmp_path, f"31 23 0:28 / {fake.root} rw - cgroup2 cgroup2 rw")
    proc = _own_cgroup(tmp_path, "/user.slice/session-3.scope")
    driver = detect_driver("jobmgr", mountinfo=info, proc_cgroup=proc)
    assert isinstance(driver, v2.Driver)
    assert driver.base == ""
    assert driver.open("job").path == f"{fake.root}/jobmgr/job"
