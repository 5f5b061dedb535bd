"""Steps for features/confinement.feature: escapes tried from inside jobs of a real
jobmgr-server over mTLS, each followed by a look at the host."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import trustme
from pytest_bdd import given, parsers, scenarios, then, when

from harness.cgroups import job_dirs, job_file, job_pids
from harness.figures import report
from harness.pki import CertPair, ScenarioPKI
from harness.poll import eventually
from harness.programs import program, program_env
from harness.server import ServerProgram
from jobmgr.api import job_pb2
from jobmgr.worker.cgroups._device_bpf import attached

from ._confinement_host import (
    Launch,
    Service,
    busybox_tree,
    launch_in_place,  # noqa: F401  # a fixture
    markers_on_host,
    remove_markers,
    root_free,
    setuid_copy,
    shm_used,
    var_lib_place,  # noqa: F401  # a fixture
)
from .fixtures_scenario import Scenario

scenarios("confinement.feature")

MiB = 1024 * 1024
PROBE = (Path(__file__).with_name("_confinement_probe.py")).read_text()
USERS = {"its own uid": "", "root": "root", "nobody": "nobody"}
JOB_DEVICES = "c 1:3 rwm c 1:5 rwm c 1:7 rwm c 1:8 rwm c 1:9 rwm c 5:0 rwm c 5:2 rwm c 136:* rwm"


@pytest.fixture(autouse=True)
def _no_marker_left(scenario_marker: str) -> Iterator[None]:
    """Whatever an unconfined job would leave on the host goes, even when a scenario fails."""
    scratch_existed = os.path.exists("/scratch")
    yield
    remove_markers(scenario_marker, scratch_existed)


# ---- jobs -------------------------------------------------------------------------------------


def start_probe(
    server: ServerProgram,
    plan: list[list[str]],
    user: str = "its own uid",
    *,
    limits: job_pb2.Limits | None = None,
    mounts: tuple[job_pb2.Mount, ...] = (),
    kind: str = "admin",
) -> str:
    """Start the probe program (steps/_confinement_probe.py) with ``plan``; its job id."""
    argv = ["python3", "-c", PROBE, server.marker, json.dumps(plan)]
    request = job_pb2.StartRequest(
        cmd=argv[0], args=argv[1:], limits=limits, run_as=USERS[user], mounts=mounts
    )
    return str(server.stub(kind).Start(request, timeout=30).uuid)


def outcomes(server: ServerProgram, job: str) -> dict[str, str]:
    """label -> outcome, once the probe has ended."""
    server.wait_ended(job, timeout=120)
    found = {}
    for line in server.output(job).decode(errors="replace").splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            found[item["label"]] = item["outcome"]
    return found


def probe(
    server: ServerProgram, plan: list[list[str]], user: str, **options: Any
) -> dict[str, str]:
    found = outcomes(server, start_probe(server, plan, user, **options))
    report(f"a job as {user} tried: {found}")
    return found


def refused(server: ServerProgram, request: job_pb2.StartRequest) -> grpc.RpcError:
    try:
        server.stub().Start(request, timeout=30)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"the start was accepted: {request}")


# ---- servers ----------------------------------------------------------------------------------


def confined_server(
    request: pytest.FixtureRequest, scenario: Scenario, *flags: str
) -> tuple[ServerProgram, Path]:
    """A server whose state directory and certificates (and the CA's key, as jobmgr-certs
    leaves it) are under a /var/lib directory of the scenario's: jobs would see them there."""
    launch: Launch = request.getfixturevalue("launch_in_place")
    ca: trustme.CA = request.getfixturevalue("trusted_ca")
    scenario.server = launch(*flags, ca_key=ca.private_key_pem.bytes())
    place: Path = request.getfixturevalue("var_lib_place")
    scenario.notes["place"] = place
    return scenario.program, place


@given(
    "a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs"
)
def _confined_server(request: pytest.FixtureRequest, scenario: Scenario) -> None:
    confined_server(request, scenario, "--allow-run-as", "root", "--allow-run-as", "nobody")


# ---- the view ---------------------------------------------------------------------------------

WRITTEN = ("/tmp", "/var/tmp", "/dev/shm", "/scratch")
NOT_WRITTEN = ("/etc", "/usr", "/")


@when(
    parsers.parse(
        "the admin starts a job as {user} that writes a marker into /tmp, /var/tmp, /dev/shm, "
        "/scratch, /etc, /usr and /, and lists /tmp"
    )
)
def _writes(scenario: Scenario, user: str) -> None:
    marker = scenario.program.marker
    plan = [[d, "write", f"{d.rstrip('/')}/{marker}"] for d in (*WRITTEN, *NOT_WRITTEN)]
    scenario.notes["seen"] = probe(scenario.program, [*plan, ["ls /tmp", "list", "/tmp"]], user)


@then(
    "it could write only into /tmp, /var/tmp, /dev/shm and /scratch, and its /tmp held nothing "
    "of the host's"
)
def _wrote_own(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    assert all(seen[d] == "ok" for d in WRITTEN), seen
    assert all(seen[d] in ("EROFS", "EACCES") for d in NOT_WRITTEN), seen
    assert seen["ls /tmp"] == f"ok: {scenario.program.marker}", seen["ls /tmp"]


@then("once it has ended, no marker is on the host")
def _no_marker(scenario: Scenario) -> None:
    assert markers_on_host(scenario.program.marker) == []


HIDDEN = ("/root", "/home", "/run", "/var/run")


@when(
    parsers.parse(
        "the admin starts a job as {user} that lists /root, /home, /run, /var/run, the state "
        "directory and the certificates' directory, and reads the CA's key"
    )
)
def _lists_hidden(scenario: Scenario, user: str) -> None:
    place: Path = scenario.notes["place"]
    listed = (*HIDDEN, str(place / "state"), str(place / "certs"))
    for path in listed:  # so that an empty listing in the job means something
        assert os.listdir(path), f"{path} is empty on the host"
    plan = [[path, "list", path] for path in listed]
    plan.append(["ca.key", "read", str(place / "certs" / "ca.key")])
    scenario.notes.update(listed=listed, seen=probe(scenario.program, plan, user))


@then("every listing was empty and the CA's key could not be read")
def _all_empty(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    for path in scenario.notes["listed"]:
        assert seen[path] == "ok: ", f"{path} in the job: {seen[path]}"
    assert not seen["ca.key"].startswith("ok"), seen["ca.key"]


@given(
    "a host service listening on a socket, mode 0777, at /var/lib and at /run, and on an "
    "abstract name"
)
def _service(scenario: Scenario, request: pytest.FixtureRequest) -> None:
    marker = scenario.program.marker
    paths = [str(scenario.notes["place"] / "db.sock"), f"/run/jobmgr-test-{marker}.sock"]
    service = Service(paths, f"jobmgr-test-{marker}")
    request.addfinalizer(service.close)
    service.start()
    scenario.notes["service"] = service


@when(parsers.parse("the admin starts a job as {user} that connects to the three of them"))
def _connects(scenario: Scenario, user: str) -> None:
    service: Service = scenario.notes["service"]
    plan = [[path, "connect", path] for path in (*service.paths, "@" + service.abstract)]
    scenario.notes["seen"] = probe(scenario.program, plan, user)


@then("every connection failed, and the service accepted none")
def _none_connected(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    assert all(outcome != "ok" for outcome in seen.values()), seen
    assert scenario.notes["service"].accepted == 0


# ---- disk -------------------------------------------------------------------------------------


@given("the host's /dev/shm and the free space of / are measured")
def _measured_host(scenario: Scenario) -> None:
    scenario.notes.update(shm=shm_used(), free=root_free())


@when(
    parsers.parse(
        "the admin starts a job as {user} with a disk limit of {mib:d} MiB that writes 20 MiB "
        "into /tmp, then into /dev/shm until a write fails"
    )
)
def _fills(scenario: Scenario, user: str, mib: int) -> None:
    marker = scenario.program.marker
    plan = [["tmp", "fill", f"/tmp/{marker}-a", "20"], ["shm", "fill", f"/dev/shm/{marker}", "64"]]
    limits = job_pb2.Limits(disk_bytes=mib * MiB)
    scenario.notes["seen"] = probe(scenario.program, plan, user, limits=limits)


@then(parsers.parse("the write into /dev/shm failed with ENOSPC after {low:d} to {high:d} MiB"))
def _enospc(scenario: Scenario, low: int, high: int) -> None:
    seen = scenario.notes["seen"]
    assert seen["tmp"] == f"ok: {20 * MiB}", seen
    kind, _, written = seen["shm"].partition(" after ")
    assert kind == "ENOSPC", seen
    assert low * MiB <= int(written) <= high * MiB, seen


@then(
    "once it has ended, no marker is on the host, /dev/shm holds what it held, and / lost less "
    "than 16 MiB"
)
def _host_as_before(scenario: Scenario) -> None:
    lost = scenario.notes["free"] - root_free()
    grew = shm_used() - scenario.notes["shm"]
    report(f"host after the job: / lost {lost / MiB:.1f} MiB, /dev/shm grew {grew / MiB:.1f} MiB")
    assert markers_on_host(scenario.program.marker) == []
    assert abs(grew) < 2 * MiB, grew
    assert lost < 16 * MiB, lost


@when(
    parsers.parse(
        "the admin starts a job with a memory and disk limit of {mib:d} MiB that writes 40 MiB "
        "into /dev/shm, then allocates memory without end"
    )
)
def _shm_then_hog(scenario: Scenario, mib: int) -> None:
    plan = [["shm", "fill", f"/dev/shm/{scenario.program.marker}", "40"], ["hog", "hog"]]
    limits = job_pb2.Limits(memory_bytes=mib * MiB, disk_bytes=mib * MiB)
    scenario.job = start_probe(scenario.program, plan, limits=limits)


# ---- identity ---------------------------------------------------------------------------------


def owner_kind(scenario: Scenario, request: pytest.FixtureRequest, owner: str) -> str:
    """A certificate with role admin and CN ``owner``, for a client of its own."""
    pki: ScenarioPKI = request.getfixturevalue("scenario_pki")
    if owner not in pki.clients:
        ca: trustme.CA = request.getfixturevalue("trusted_ca")
        leaf = ca.issue_cert(common_name=owner, organization_name="admin")
        cast(dict[str, CertPair], pki.clients)[owner] = CertPair(
            leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes(), Path(), Path()
        )
    return owner


@when(
    parsers.parse(
        'the owner "{owner}" starts a job that writes a secret into /tmp and /scratch, then waits'
    )
)
def _alice(scenario: Scenario, request: pytest.FixtureRequest, owner: str) -> None:
    server, secret = scenario.program, f"secret of {owner}"
    plan = [
        ["ids", "ids"],
        ["tmp", "write", f"/tmp/{server.marker}-secret", secret],
        ["scratch", "write", f"/scratch/{server.marker}-secret", secret],
        ["wait", "sleep", "4"],
        ["tmp again", "read", f"/tmp/{server.marker}-secret"],
        ["scratch again", "read", f"/scratch/{server.marker}-secret"],
    ]
    job = start_probe(server, plan, kind=owner_kind(scenario, request, owner))
    said = b""
    for message in server.stub().Output(job_pb2.OutputRequest(uuid=job), timeout=60):
        said += message.output
        if b'"scratch"' in said:
            break
    scenario.notes.update(alice=job, secret=secret)


@when(
    parsers.parse(
        'the owner "{owner}" starts a job that reads, overwrites and kills whatever of alice\'s '
        "job it can find"
    )
)
def _bob(scenario: Scenario, request: pytest.FixtureRequest, owner: str) -> None:
    server = scenario.program
    plan = [
        ["ids", "ids"],
        ["read tmp", "read", f"/tmp/{server.marker}-secret"],
        ["list scratch", "list", "/scratch"],
        ["kill", "kill_marked", server.marker],
    ]
    scenario.notes["bob"] = outcomes(
        server, start_probe(server, plan, kind=owner_kind(scenario, request, owner))
    )


@then("bob's job found none of alice's files and killed nothing")
def _bob_found_nothing(scenario: Scenario) -> None:
    bob = scenario.notes["bob"]
    report(f"bob's job: {bob}")
    assert bob["read tmp"] == "ENOENT" and bob["list scratch"] == "ok: ", bob
    assert bob["kill"] == "ok: ", bob


@then("alice's job read back its secrets unchanged and exited 0")
def _alice_intact(scenario: Scenario) -> None:
    alice = outcomes(scenario.program, scenario.notes["alice"])
    scenario.notes["alice_said"] = alice
    secret = scenario.notes["secret"]
    assert alice["tmp again"] == f"ok: {secret}" and alice["scratch again"] == f"ok: {secret}"
    assert scenario.program.status(scenario.notes["alice"]).exit_code == 0


@then(parsers.parse("the two jobs ran as two different uids of the range {first:d}-{last:d}"))
def _two_uids(scenario: Scenario, first: int, last: int) -> None:
    uids = {int(scenario.notes[who]["ids"].split()[1]) for who in ("alice_said", "bob")}
    assert len(uids) == 2 and all(first <= uid <= last for uid in uids), uids


@when(
    parsers.parse(
        "the admin starts {own:d} jobs as their own uid and {roots:d} as root, all at once, each "
        "printing its host uid"
    )
)
def _many(scenario: Scenario, own: int, roots: int) -> None:
    plan = [["ids", "ids"], ["map", "uid_map"], ["wait", "sleep", "2"]]
    users = ["its own uid"] * own + ["root"] * roots
    found: list[dict[str, str]] = []

    def one(user: str) -> None:
        found.append(probe(scenario.program, plan, user))

    threads = [threading.Thread(target=one, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # A root job's uid on the host is what its uid_map maps root to; the others' is their own.
    scenario.notes["uids"] = [
        int(seen["map"].split()[2]) if seen["ids"] == "ok: 0 0" else int(seen["ids"].split()[1])
        for seen in found
    ]


@then(parsers.parse("the {count:d} host uids are distinct and in the range {first:d}-{last:d}"))
def _distinct(scenario: Scenario, count: int, first: int, last: int) -> None:
    uids = scenario.notes["uids"]
    assert len(uids) == count and len(set(uids)) == count, uids
    assert all(first <= uid <= last for uid in uids), uids


@when("the admin starts a job as its own uid that waits")
def _waiting_job(scenario: Scenario) -> None:
    scenario.job = start_probe(scenario.program, [["wait", "sleep", "600"]])
    eventually(lambda: bool(_job_uids(scenario)), 20.0, "the job to run")
    scenario.notes["first uid"] = _job_uids(scenario)


def _job_uids(scenario: Scenario) -> set[int]:
    """The host uids of the waiting job's own code: the probe and its sleep, among the
    processes of the job's cgroup (its init, which runs as root, is the sandbox's). The
    server and its launcher carry the scenario's marker in their command lines too, so the
    cgroup, not the marker, says what is the job's."""
    uids = set()
    for pid in job_pids(scenario.program.cgroup_parent, scenario.job):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        if args[:2] == [b"python3", b"-c"] or args == [b"sleep", b"600"]:
            uids |= {int(line.split()[1]) for line in status if line.startswith("Uid:")}
    return uids


@when("jobmgr-server is killed with SIGKILL and started again")
def _killed_and_restarted(scenario: Scenario) -> None:
    scenario.program.kill9()
    scenario.program.start()


@when(
    parsers.parse(
        "the admin starts {count:d} jobs as their own uid, all at once, each printing its host uid"
    )
)
def _more_jobs(scenario: Scenario, count: int) -> None:
    _many(scenario, count, 0)


@then("the first job still runs, re-adopted, as the uid it started with, which none of the 6 has")
def _uid_kept(scenario: Scenario) -> None:
    first = scenario.notes["first uid"]
    assert len(first) == 1, first
    assert scenario.program.status(scenario.job).state == job_pb2.JOB_STATE_RUNNING
    assert _job_uids(scenario) == first
    assert not first & set(scenario.notes["uids"]), (first, scenario.notes["uids"])
    scenario.program.stub().Stop(job_pb2.StopRequest(uuid=scenario.job), timeout=30)


# ---- privilege --------------------------------------------------------------------------------


@given(parsers.parse('a setuid-root copy of "{program_name}" in a host directory under /var/lib'))
def _setuid(scenario: Scenario, program_name: str) -> None:
    scenario.notes["setuid"] = setuid_copy(scenario.notes["place"], program_name)


@when(
    "the admin starts a job as its own uid that reads its /proc/self/status and runs the setuid "
    "copy of id"
)
def _status_and_setuid(scenario: Scenario) -> None:
    plan = [
        ["status", "status", "NoNewPrivs", "Seccomp", "CapBnd", "CapEff", "CapPrm", "CapAmb"],
        ["ids", "ids"],
        ["setuid id", "run", str(scenario.notes["setuid"]), "-u"],
    ]
    scenario.notes["seen"] = probe(scenario.program, plan, "its own uid")


@then(parsers.parse('its status shows "{first}", "{second}" and "{third}"'))
def _status_shows(scenario: Scenario, first: str, second: str, third: str) -> None:
    status = json.loads(scenario.notes["seen"]["status"].removeprefix("ok: "))
    for line in (first, second, third):
        key, _, value = line.partition(": ")
        assert status[key] == value, status
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "0" * 16, status


@then("the setuid copy ran with the job's own uid as its effective uid")
def _setuid_no_root(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    assert seen["setuid id"] == "ok: " + seen["ids"].split()[1], seen


SECCOMP_CALLS: dict[str, list[str]] = {
    "unshare(CLONE_NEWUSER)": ["unshare", "0x10000000"],
    "keyctl": ["keyctl", "0", "-3", "0"],  # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": ["add_key", "0", "0", "0", "0", "0"],
    "bpf": ["bpf", "0", "0", "0"],
    "perf_event_open": ["perf_event_open", "0", "0", "-1", "-1", "0"],
    "kexec_load": ["kexec_load", "0", "0", "0", "0"],
    "init_module": ["init_module", "0", "0", "0"],
    "finit_module": ["finit_module", "-1", "0", "0"],
    "delete_module": ["delete_module", "0", "0"],
    "swapoff": ["swapoff", "0"],
    "reboot": ["reboot", "0", "0", "0", "0"],
    "settimeofday": ["settimeofday", "0", "0"],
    "clock_settime": ["clock_settime", "0", "0"],
    "acct": ["acct", "0"],
    "userfaultfd": ["userfaultfd", "0"],
    "open_by_handle_at": ["open_by_handle_at", "-1", "0", "0"],
    "iopl": ["iopl", "0"],
    "ioperm": ["ioperm", "0", "0", "0"],
    "syslog": ["syslog", "10", "0", "0"],  # SYSLOG_ACTION_SIZE_BUFFER
    "quotactl": ["quotactl", "0", "0", "0", "0"],
    "clone3": ["clone3", "0", "0"],
}


@when(
    parsers.parse(
        "the admin starts a job as {user} that makes a user namespace, and calls keyctl, add_key, "
        "bpf, perf_event_open, kexec_load, init_module, finit_module, delete_module, swapoff, "
        "reboot, settimeofday, clock_settime, acct, userfaultfd, open_by_handle_at, iopl, ioperm, "
        "syslog, quotactl and clone3"
    )
)
def _syscalls(scenario: Scenario, user: str) -> None:
    plan = [[name, "syscall", *call] for name, call in SECCOMP_CALLS.items()]
    mountpoint = f"/scratch/{scenario.program.marker}-m"
    plan += [["mkdir", "run", "mkdir", "-p", mountpoint]]
    plan += [["mount", "run", "mount", "-t", "tmpfs", "jobmgr-test", mountpoint]]
    scenario.notes["seen"] = probe(scenario.program, plan, user)


@then("every call failed with EPERM but clone3, which failed with ENOSYS")
def _all_eperm(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    wrong = {n: o for n, o in seen.items() if n in SECCOMP_CALLS and o != "EPERM"}
    assert wrong == {"clone3": "ENOSYS"}, wrong


@then(parsers.parse("a job as {user} may mount: {answer}"))
def _may_mount(scenario: Scenario, answer: str) -> None:
    assert scenario.notes["seen"]["mount"].startswith("ok") is (answer == "yes"), scenario.notes


# ---- root -------------------------------------------------------------------------------------


@when("the admin starts a job as root that tries root things in its own view and on the host")
def _root_things(scenario: Scenario) -> None:
    server, place = scenario.program, scenario.notes["place"]
    marker = server.marker
    mine = f"/scratch/{marker}"
    scenario.notes["hostname"] = socket.gethostname()
    plan = [
        ["ids", "ids"],
        ["map", "uid_map"],
        ["scratch", "write", f"{mine}-by-root"],
        ["mkdir", "run", "mkdir", "-p", f"{mine}-t", f"{mine}-b", f"{mine}-cg"],
        ["tmpfs", "run", "mount", "-t", "tmpfs", "jobmgr-test", f"{mine}-t"],
        ["bind", "run", "mount", "--bind", "/usr", f"{mine}-b"],
        ["hostname", "hostname", f"jobmgr-test-{marker[-8:]}"],
        ["ca.key", "read", str(place / "certs" / "ca.key")],
        ["etc", "write", f"/etc/{marker}"],
        # The clock set to what it already says: harmless wherever it gets through.
        ["clock", "run", "sh", "-c", "date -s @$(date +%s)"],
        ["core_pattern", "open_write", "/proc/sys/kernel/core_pattern"],
        ["launcher", "connect", str(place / "state" / "launcher.sock")],
        ["cgroup", "run", "mount", "-t", "cgroup", "-o", "memory", "jobmgr-test", f"{mine}-cg"],
        ["cgroup2", "run", "mount", "-t", "cgroup2", "jobmgr-test", f"{mine}-cg"],
    ]
    scenario.notes["seen"] = probe(server, plan, "root")


@then(
    "in its own view it wrote its scratch, mounted a tmpfs, bound a directory and set its hostname"
)
def _root_in_view(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    assert seen["ids"] == "ok: 0 0", seen
    for done in ("scratch", "tmpfs", "bind"):
        assert seen[done].startswith("ok"), (done, seen[done])
    assert seen["hostname"] == f"ok: jobmgr-test-{scenario.program.marker[-8:]}", seen["hostname"]


@then(
    "it could not read the CA's key, write /etc, set the clock, open core_pattern for writing, "
    "reach the launcher's socket, or mount a cgroup filesystem"
)
def _root_not_host(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    for attempt in ("ca.key", "etc", "clock", "core_pattern", "launcher", "cgroup", "cgroup2"):
        assert not seen[attempt].startswith("ok"), (attempt, seen[attempt])


@then(
    parsers.parse(
        "on the host its root was one uid of the range {first:d}-{last:d}, /etc has no marker, "
        "and the hostname is unchanged"
    )
)
def _root_on_host(scenario: Scenario, first: int, last: int) -> None:
    inside, outside, count = scenario.notes["seen"]["map"].removeprefix("ok: ").split()
    assert inside == "0" and count == "1" and first <= int(outside) <= last
    assert markers_on_host(scenario.program.marker) == []
    assert socket.gethostname() == scenario.notes["hostname"]


# ---- devices ----------------------------------------------------------------------------------


@when(
    parsers.parse(
        "the admin starts a job as {user} that makes a node for the host's disk and opens it, then "
        "opens /dev/null, /dev/zero and /dev/urandom"
    )
)
def _devices(scenario: Scenario, user: str) -> None:
    server = scenario.program
    disk = os.stat("/").st_dev
    node = f"/scratch/{server.marker}-disk"
    plan = [
        ["mknod", "mknod", node, "b", str(os.major(disk)), str(os.minor(disk))],
        ["disk", "open", node],
        *([d, "open", d] for d in ("/dev/null", "/dev/zero", "/dev/urandom")),
        ["wait", "sleep", "3"],
    ]
    job = start_probe(server, plan, user)
    eventually(lambda: _devices_list(server, job) is not None, 20.0, "the job's devices cgroup")
    listing = _devices_list(server, job)
    scenario.notes.update(devices=listing, seen=outcomes(server, job))
    report(f"a job as {user}: {scenario.notes['seen']}; devices.list {listing!r}")


def _devices_list(server: ServerProgram, job: str) -> str | None:
    """What the job's cgroup allows, found where the cgroup driver put it: devices.list under
    v1; under v2, where a cgroup has no such file, the device filter programs attached to its
    one directory (one program allows exactly JOB_DEVICES: tests/test_device_filter)."""
    try:
        return " ".join(job_file(server.cgroup_parent, job, "devices.list").read_text().split())
    except FileNotFoundError:
        pass
    for directory in job_dirs(server.cgroup_parent, job):
        if os.path.exists(os.path.join(directory, "cgroup.controllers")):
            filters = attached(directory)
            return JOB_DEVICES if filters == 1 else f"{filters} filters"
    return None


@then("making or opening the disk failed, and the three others opened")
def _disk_refused(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    assert not (seen["mknod"] == "ok" and seen["disk"].startswith("ok")), seen
    assert not seen["disk"].startswith("ok"), seen
    for device in ("/dev/null", "/dev/zero", "/dev/urandom"):
        assert seen[device].startswith("ok"), seen


@then(
    "the job's devices cgroup allowed exactly null, zero, full, random, urandom, tty, ptmx and pts"
)
def _devices_cgroup(scenario: Scenario) -> None:
    assert scenario.notes["devices"] == JOB_DEVICES


# ---- opt-ins ----------------------------------------------------------------------------------


def mountable_server(
    request: pytest.FixtureRequest, scenario: Scenario, name: str, writable: bool
) -> None:
    place: Path = request.getfixturevalue("var_lib_place")
    data = place / "data"
    data.mkdir()
    os.chmod(data, 0o777)  # for a job running as nobody
    (data / name).write_text(f"the host's {name}\n")
    allowed = f"{data}:rw" if writable else str(data)
    confined_server(request, scenario, "--allow-mount", allowed, "--allow-run-as", "nobody")
    scenario.notes.update(data=data, name=name)


@given(parsers.parse('a jobmgr-server allowing jobs to mount a host directory holding "{name}"'))
def _mountable(request: pytest.FixtureRequest, scenario: Scenario, name: str) -> None:
    mountable_server(request, scenario, name, writable=False)


@given(
    parsers.parse(
        'a jobmgr-server allowing jobs to mount a host directory holding "{name}", writable'
    )
)
def _mountable_rw(request: pytest.FixtureRequest, scenario: Scenario, name: str) -> None:
    mountable_server(request, scenario, name, writable=True)


def mount_of(source: Path | str, target: str, writable: bool = False) -> job_pb2.Mount:
    return job_pb2.Mount(source=str(source), target=target, writable=writable)


@when(
    "the admin starts a job as its own uid mounting that directory at /data, which reads "
    "data.txt and writes /data/new.txt"
)
def _reads_mount(scenario: Scenario) -> None:
    plan = [["read", "read", "/data/data.txt"], ["write", "write", "/data/new.txt"]]
    mounts = (mount_of(scenario.notes["data"], "/data"),)
    scenario.notes["seen"] = probe(scenario.program, plan, "its own uid", mounts=mounts)


@then("the job read data.txt and could not write /data/new.txt")
def _read_not_written(scenario: Scenario) -> None:
    seen = scenario.notes["seen"]
    assert seen["read"] == "ok: the host's data.txt\n", seen
    assert seen["write"] == "EROFS", seen
    assert not (scenario.notes["data"] / "new.txt").exists()


@then("mounting /etc, or that directory writable, is refused as INVALID_ARGUMENT naming the source")
def _mounts_refused(scenario: Scenario) -> None:
    data = scenario.notes["data"]
    for mount, named in ((mount_of("/etc", "/x"), "/etc"), (mount_of(data, "/d", True), str(data))):
        error = refused(scenario.program, job_pb2.StartRequest(cmd="true", mounts=[mount]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert named in (error.details() or ""), error.details()


@when(
    "the admin starts a job as nobody mounting that directory writable at /out, which writes "
    "/out/result.txt"
)
def _writes_mount(scenario: Scenario) -> None:
    plan = [["write", "write", "/out/result.txt"]]
    mounts = (mount_of(scenario.notes["data"], "/out", writable=True),)
    scenario.notes["seen"] = probe(scenario.program, plan, "nobody", mounts=mounts)


@then("the host directory holds result.txt, owned by nobody")
def _written_on_host(scenario: Scenario) -> None:
    result = scenario.notes["data"] / "result.txt"
    assert scenario.notes["seen"]["write"] == "ok", scenario.notes["seen"]
    assert result.read_text() == "written by a job\n" and result.stat().st_uid == 65534


@then("a job as its own uid asking for that writable mount is refused as INVALID_ARGUMENT")
def _own_uid_no_rw(scenario: Scenario) -> None:
    mount = mount_of(scenario.notes["data"], "/out", writable=True)
    error = refused(scenario.program, job_pb2.StartRequest(cmd="true", mounts=[mount]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "named user" in (error.details() or ""), error.details()


@given("a busybox tree in a directory the server allows as a job's root")
def _busybox_root(request: pytest.FixtureRequest, scenario: Scenario, tmp_path: Path) -> None:
    roots = tmp_path / "roots"
    tree = busybox_tree(roots / "busybox")
    confined_server(request, scenario, "--allow-rootfs", str(roots))
    scenario.notes["tree"] = tree


@when(
    "the admin starts a job as its own uid in that tree that reads /etc/os-release, lists /usr "
    "and writes / and /scratch"
)
def _in_tree(scenario: Scenario) -> None:
    server = scenario.program
    script = (
        "cat /etc/os-release; echo usr: $(ls /usr); touch /new 2>/dev/null || echo no /new; "
        'echo kept > "/scratch/$0" && echo scratch: $(cat "/scratch/$0")'
    )
    request = job_pb2.StartRequest(
        cmd="sh", args=["-c", script, server.marker], rootfs=str(scenario.notes["tree"])
    )
    job = server.stub().Start(request, timeout=30).uuid
    server.wait_ended(job)
    scenario.notes["said"] = server.output(job).decode()
    report(f"a job in a busybox root said: {scenario.notes['said']!r}")


@then("it saw the tree's os-release, an empty /usr, could not write / and wrote /scratch")
def _tree_seen(scenario: Scenario) -> None:
    assert scenario.notes["said"] == (
        'NAME="jobmgr test root"\nID=jobmgr-test\nusr:\nno /new\nscratch: kept\n'
    )


@then(
    "a job asking for a root filesystem outside the allowed directories is refused as "
    "INVALID_ARGUMENT"
)
def _rootfs_refused(scenario: Scenario) -> None:
    error = refused(scenario.program, job_pb2.StartRequest(cmd="true", rootfs="/usr"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "rootfs '/usr' is not allowed" in (error.details() or ""), error.details()


# ---- refusals at start ------------------------------------------------------------------------


def start_refused(
    request: pytest.FixtureRequest, tmp_path: Path, *flags: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run jobmgr-server (after ``prefix``), expecting it to refuse to start."""
    pki: ScenarioPKI = request.getfixturevalue("scenario_pki")
    argv = [
        *prefix, *program("jobmgr-server"), "--port", "0", "--ca", str(pki.ca_path),
        "--cert", str(pki.server.cert_path), "--key", str(pki.server.key_path),
        "--state-dir", str(tmp_path / "state"), "--cgroup-parent", f"jobmgr-test-{os.getpid()}",
        *flags,
    ]  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=program_env(), cwd="/"
    )


@when("jobmgr-server is started where libseccomp.so.2 cannot be loaded")
def _no_libseccomp(request: pytest.FixtureRequest, scenario: Scenario, tmp_path: Path) -> None:
    library = shlex.quote(os.path.realpath(_libseccomp()))
    # In a mount namespace of its own the library is an empty file: the server's view only.
    hide = f'mount --bind /dev/null {library} && exec "$@"'
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh")
    scenario.notes["done"] = start_refused(request, tmp_path, prefix=prefix)


def _libseccomp() -> str:
    found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in found.splitlines():
        if "libseccomp.so.2 " in line and "=>" in line:
            return line.split("=>")[1].strip()
    raise AssertionError("libseccomp.so.2 is not installed here")


@when(parsers.parse('jobmgr-server is started with "{flags}"'))
def _started_with(
    request: pytest.FixtureRequest, scenario: Scenario, tmp_path: Path, flags: str
) -> None:
    scenario.notes["done"] = start_refused(request, tmp_path, *shlex.split(flags))


@then(parsers.parse('it exits with status 1 saying "{first}" and "{second}"'))
def _refusal(scenario: Scenario, first: str, second: str) -> None:
    done: subprocess.CompletedProcess[str] = scenario.notes["done"]
    report(f"jobmgr-server refused to start: {done.stderr.strip()}")
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert first in done.stderr and second in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
