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

from jobmgr.api import job_pb2
from jobmgr.worker.cgroups._device_bpf import attached

from ._confinement_host import (
    Service,
    busybox_tree,
    markers_on_host,
    remove_markers,
    root_free,
    setuid_copy,
    shm_used,
    var_lib_place,  # noqa: F401  # a fixture
)
from ._grpc_steps import eventually
from ._hostile_server import HostileServer, LaunchServer, marked_processes
from ._hostile_steps import *  # noqa: F403  # the shared steps
from ._hostile_steps import Hostile, report
from .fixtures_pki import CertPair, ScenarioPKI
from .fixtures_server import program, program_env

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
    server: HostileServer,
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


def outcomes(server: HostileServer, job: str) -> dict[str, str]:
    """label -> outcome, once the probe has ended."""
    server.wait_ended(job, timeout=120)
    found = {}
    for line in server.output(job).decode(errors="replace").splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            found[item["label"]] = item["outcome"]
    return found


def probe(
    server: HostileServer, plan: list[list[str]], user: str, **options: Any
) -> dict[str, str]:
    found = outcomes(server, start_probe(server, plan, user, **options))
    report(f"a job as {user} tried: {found}")
    return found


def refused(server: HostileServer, request: job_pb2.StartRequest) -> grpc.RpcError:
    try:
        server.stub().Start(request, timeout=30)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"the start was accepted: {request}")


# ---- servers ----------------------------------------------------------------------------------


def confined_server(
    request: pytest.FixtureRequest, hostile: Hostile, *flags: str
) -> tuple[HostileServer, Path]:
    """A server whose state directory and certificates (and the CA's key, as jobmgr-certs
    leaves it) are under a /var/lib directory of the scenario's: jobs would see them there."""
    place: Path = request.getfixturevalue("var_lib_place")
    launch: LaunchServer = request.getfixturevalue("launch_server")
    pki: ScenarioPKI = request.getfixturevalue("scenario_pki")
    ca: trustme.CA = request.getfixturevalue("trusted_ca")
    certs = place / "certs"
    certs.mkdir(mode=0o700)
    (certs / "ca.pem").write_bytes(pki.ca_pem)
    (certs / "server.pem").write_bytes(pki.server.cert_pem)
    for name, pem in (("server.key", pki.server.key_pem), ("ca.key", ca.private_key_pem.bytes())):
        fd = os.open(certs / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, pem)
        os.close(fd)
    tls = ["--ca", str(certs / "ca.pem"), "--cert", str(certs / "server.pem")]
    tls += ["--key", str(certs / "server.key")]
    hostile.server = launch("--state-dir", str(place / "state"), *tls, *flags)
    hostile.notes["place"] = place
    return hostile.server, place


@given(
    "a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs"
)
def _confined_server(request: pytest.FixtureRequest, hostile: Hostile) -> None:
    confined_server(request, hostile, "--allow-run-as", "root", "--allow-run-as", "nobody")


# ---- the view ---------------------------------------------------------------------------------

WRITTEN = ("/tmp", "/var/tmp", "/dev/shm", "/scratch")
NOT_WRITTEN = ("/etc", "/usr", "/")


@when(
    parsers.parse(
        "the admin starts a job as {user} that writes a marker into /tmp, /var/tmp, /dev/shm, "
        "/scratch, /etc, /usr and /, and lists /tmp"
    )
)
def _writes(hostile: Hostile, user: str) -> None:
    marker = hostile.srv.marker
    plan = [[d, "write", f"{d.rstrip('/')}/{marker}"] for d in (*WRITTEN, *NOT_WRITTEN)]
    hostile.notes["seen"] = probe(hostile.srv, [*plan, ["ls /tmp", "list", "/tmp"]], user)


@then(
    "it could write only into /tmp, /var/tmp, /dev/shm and /scratch, and its /tmp held nothing "
    "of the host's"
)
def _wrote_own(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    assert all(seen[d] == "ok" for d in WRITTEN), seen
    assert all(seen[d] in ("EROFS", "EACCES") for d in NOT_WRITTEN), seen
    assert seen["ls /tmp"] == f"ok: {hostile.srv.marker}", seen["ls /tmp"]


@then("once it has ended, no marker is on the host")
def _no_marker(hostile: Hostile) -> None:
    assert markers_on_host(hostile.srv.marker) == []


HIDDEN = ("/root", "/home", "/run", "/var/run")


@when(
    parsers.parse(
        "the admin starts a job as {user} that lists /root, /home, /run, /var/run, the state "
        "directory and the certificates' directory, and reads the CA's key"
    )
)
def _lists_hidden(hostile: Hostile, user: str) -> None:
    place: Path = hostile.notes["place"]
    listed = (*HIDDEN, str(place / "state"), str(place / "certs"))
    for path in listed:  # so that an empty listing in the job means something
        assert os.listdir(path), f"{path} is empty on the host"
    plan = [[path, "list", path] for path in listed]
    plan.append(["ca.key", "read", str(place / "certs" / "ca.key")])
    hostile.notes.update(listed=listed, seen=probe(hostile.srv, plan, user))


@then("every listing was empty and the CA's key could not be read")
def _all_empty(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    for path in hostile.notes["listed"]:
        assert seen[path] == "ok: ", f"{path} in the job: {seen[path]}"
    assert not seen["ca.key"].startswith("ok"), seen["ca.key"]


@given(
    "a host service listening on a socket, mode 0777, at /var/lib and at /run, and on an "
    "abstract name"
)
def _service(hostile: Hostile, request: pytest.FixtureRequest) -> None:
    marker = hostile.srv.marker
    paths = [str(hostile.notes["place"] / "db.sock"), f"/run/jobmgr-test-{marker}.sock"]
    service = Service(paths, f"jobmgr-test-{marker}")
    request.addfinalizer(service.close)
    service.start()
    hostile.notes["service"] = service


@when(parsers.parse("the admin starts a job as {user} that connects to the three of them"))
def _connects(hostile: Hostile, user: str) -> None:
    service: Service = hostile.notes["service"]
    plan = [[path, "connect", path] for path in (*service.paths, "@" + service.abstract)]
    hostile.notes["seen"] = probe(hostile.srv, plan, user)


@then("every connection failed, and the service accepted none")
def _none_connected(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    assert all(outcome != "ok" for outcome in seen.values()), seen
    assert hostile.notes["service"].accepted == 0


# ---- disk -------------------------------------------------------------------------------------


@given("the host's /dev/shm and the free space of / are measured")
def _measured_host(hostile: Hostile) -> None:
    hostile.notes.update(shm=shm_used(), free=root_free())


@when(
    parsers.parse(
        "the admin starts a job as {user} with a disk limit of {mib:d} MiB that writes 20 MiB "
        "into /tmp, then into /dev/shm until a write fails"
    )
)
def _fills(hostile: Hostile, user: str, mib: int) -> None:
    marker = hostile.srv.marker
    plan = [["tmp", "fill", f"/tmp/{marker}-a", "20"], ["shm", "fill", f"/dev/shm/{marker}", "64"]]
    limits = job_pb2.Limits(disk_bytes=mib * MiB)
    hostile.notes["seen"] = probe(hostile.srv, plan, user, limits=limits)


@then(parsers.parse("the write into /dev/shm failed with ENOSPC after {low:d} to {high:d} MiB"))
def _enospc(hostile: Hostile, low: int, high: int) -> None:
    seen = hostile.notes["seen"]
    assert seen["tmp"] == f"ok: {20 * MiB}", seen
    kind, _, written = seen["shm"].partition(" after ")
    assert kind == "ENOSPC", seen
    assert low * MiB <= int(written) <= high * MiB, seen


@then(
    "once it has ended, no marker is on the host, /dev/shm holds what it held, and / lost less "
    "than 16 MiB"
)
def _host_as_before(hostile: Hostile) -> None:
    lost = hostile.notes["free"] - root_free()
    grew = shm_used() - hostile.notes["shm"]
    report(f"host after the job: / lost {lost / MiB:.1f} MiB, /dev/shm grew {grew / MiB:.1f} MiB")
    assert markers_on_host(hostile.srv.marker) == []
    assert abs(grew) < 2 * MiB, grew
    assert lost < 16 * MiB, lost


@when(
    parsers.parse(
        "the admin starts a job with a memory and disk limit of {mib:d} MiB that writes 40 MiB "
        "into /dev/shm, then allocates memory without end"
    )
)
def _shm_then_hog(hostile: Hostile, mib: int) -> None:
    plan = [["shm", "fill", f"/dev/shm/{hostile.srv.marker}", "40"], ["hog", "hog"]]
    limits = job_pb2.Limits(memory_bytes=mib * MiB, disk_bytes=mib * MiB)
    hostile.job = start_probe(hostile.srv, plan, limits=limits)


@then(
    parsers.parse("within {seconds:d} seconds the job is FAILED by signal 9 with its OOM flag set")
)
def _oom(hostile: Hostile, seconds: int) -> None:
    status = hostile.srv.wait_ended(hostile.job, timeout=seconds)
    failed = (job_pb2.JOB_STATE_FAILED, 9, True)
    assert (status.state, status.signal, status.oom_killed) == failed, status


# ---- identity ---------------------------------------------------------------------------------


def owner_kind(hostile: Hostile, request: pytest.FixtureRequest, owner: str) -> str:
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
def _alice(hostile: Hostile, request: pytest.FixtureRequest, owner: str) -> None:
    server, secret = hostile.srv, f"secret of {owner}"
    plan = [
        ["ids", "ids"],
        ["tmp", "write", f"/tmp/{server.marker}-secret", secret],
        ["scratch", "write", f"/scratch/{server.marker}-secret", secret],
        ["wait", "sleep", "4"],
        ["tmp again", "read", f"/tmp/{server.marker}-secret"],
        ["scratch again", "read", f"/scratch/{server.marker}-secret"],
    ]
    job = start_probe(server, plan, kind=owner_kind(hostile, request, owner))
    said = b""
    for message in server.stub().Output(job_pb2.OutputRequest(uuid=job), timeout=60):
        said += message.output
        if b'"scratch"' in said:
            break
    hostile.notes.update(alice=job, secret=secret)


@when(
    parsers.parse(
        'the owner "{owner}" starts a job that reads, overwrites and kills whatever of alice\'s '
        "job it can find"
    )
)
def _bob(hostile: Hostile, request: pytest.FixtureRequest, owner: str) -> None:
    server = hostile.srv
    plan = [
        ["ids", "ids"],
        ["read tmp", "read", f"/tmp/{server.marker}-secret"],
        ["list scratch", "list", "/scratch"],
        ["kill", "kill_marked", server.marker],
    ]
    hostile.notes["bob"] = outcomes(
        server, start_probe(server, plan, kind=owner_kind(hostile, request, owner))
    )


@then("bob's job found none of alice's files and killed nothing")
def _bob_found_nothing(hostile: Hostile) -> None:
    bob = hostile.notes["bob"]
    report(f"bob's job: {bob}")
    assert bob["read tmp"] == "ENOENT" and bob["list scratch"] == "ok: ", bob
    assert bob["kill"] == "ok: ", bob


@then("alice's job read back its secrets unchanged and exited 0")
def _alice_intact(hostile: Hostile) -> None:
    alice = outcomes(hostile.srv, hostile.notes["alice"])
    hostile.notes["alice_said"] = alice
    secret = hostile.notes["secret"]
    assert alice["tmp again"] == f"ok: {secret}" and alice["scratch again"] == f"ok: {secret}"
    assert hostile.srv.status(hostile.notes["alice"]).exit_code == 0


@then(parsers.parse("the two jobs ran as two different uids of the range {first:d}-{last:d}"))
def _two_uids(hostile: Hostile, first: int, last: int) -> None:
    uids = {int(hostile.notes[who]["ids"].split()[1]) for who in ("alice_said", "bob")}
    assert len(uids) == 2 and all(first <= uid <= last for uid in uids), uids


@when(
    parsers.parse(
        "the admin starts {own:d} jobs as their own uid and {roots:d} as root, all at once, each "
        "printing its host uid"
    )
)
def _many(hostile: Hostile, own: int, roots: int) -> None:
    plan = [["ids", "ids"], ["map", "uid_map"], ["wait", "sleep", "2"]]
    users = ["its own uid"] * own + ["root"] * roots
    found: list[dict[str, str]] = []

    def one(user: str) -> None:
        found.append(probe(hostile.srv, plan, user))

    threads = [threading.Thread(target=one, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # A root job's uid on the host is what its uid_map maps root to; the others' is their own.
    hostile.notes["uids"] = [
        int(seen["map"].split()[2]) if seen["ids"] == "ok: 0 0" else int(seen["ids"].split()[1])
        for seen in found
    ]


@then(parsers.parse("the {count:d} host uids are distinct and in the range {first:d}-{last:d}"))
def _distinct(hostile: Hostile, count: int, first: int, last: int) -> None:
    uids = hostile.notes["uids"]
    assert len(uids) == count and len(set(uids)) == count, uids
    assert all(first <= uid <= last for uid in uids), uids


@when("the admin starts a job as its own uid that waits")
def _waiting_job(hostile: Hostile) -> None:
    hostile.job = start_probe(hostile.srv, [["wait", "sleep", "600"]])
    eventually(lambda: bool(_job_uids(hostile)), 20.0, "the job to run")
    hostile.notes["first uid"] = _job_uids(hostile)


def _job_uids(hostile: Hostile) -> set[int]:
    """The host uids of the waiting job's processes (its probe, found by its plan)."""
    uids = set()
    for pid in marked_processes(hostile.srv.marker):
        try:
            if b"600" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        uids |= {int(line.split()[1]) for line in status if line.startswith("Uid:")}
    return uids


@when("jobmgr-server is killed with SIGKILL and started again")
def _killed_and_restarted(hostile: Hostile) -> None:
    hostile.srv.kill9()
    hostile.srv.start()


@when(
    parsers.parse(
        "the admin starts {count:d} jobs as their own uid, all at once, each printing its host uid"
    )
)
def _more_jobs(hostile: Hostile, count: int) -> None:
    _many(hostile, count, 0)


@then(
    "the first job still runs, re-adopted, as the uid it started with, which none of the 6 has"
)
def _uid_kept(hostile: Hostile) -> None:
    first = hostile.notes["first uid"]
    assert len(first) == 1, first
    assert hostile.srv.status(hostile.job).state == job_pb2.JOB_STATE_RUNNING
    assert _job_uids(hostile) == first
    assert not first & set(hostile.notes["uids"]), (first, hostile.notes["uids"])
    hostile.srv.stub().Stop(job_pb2.StopRequest(uuid=hostile.job), timeout=30)


# ---- privilege --------------------------------------------------------------------------------


@given(parsers.parse('a setuid-root copy of "{program_name}" in a host directory under /var/lib'))
def _setuid(hostile: Hostile, program_name: str) -> None:
    hostile.notes["setuid"] = setuid_copy(hostile.notes["place"], program_name)


@when(
    "the admin starts a job as its own uid that reads its /proc/self/status and runs the setuid "
    "copy of id"
)
def _status_and_setuid(hostile: Hostile) -> None:
    plan = [
        ["status", "status", "NoNewPrivs", "Seccomp", "CapBnd", "CapEff", "CapPrm", "CapAmb"],
        ["ids", "ids"],
        ["setuid id", "run", str(hostile.notes["setuid"]), "-u"],
    ]
    hostile.notes["seen"] = probe(hostile.srv, plan, "its own uid")


@then(parsers.parse('its status shows "{first}", "{second}" and "{third}"'))
def _status_shows(hostile: Hostile, first: str, second: str, third: str) -> None:
    status = json.loads(hostile.notes["seen"]["status"].removeprefix("ok: "))
    for line in (first, second, third):
        key, _, value = line.partition(": ")
        assert status[key] == value, status
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "0" * 16, status


@then("the setuid copy ran with the job's own uid as its effective uid")
def _setuid_no_root(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
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
def _syscalls(hostile: Hostile, user: str) -> None:
    plan = [[name, "syscall", *call] for name, call in SECCOMP_CALLS.items()]
    mountpoint = f"/scratch/{hostile.srv.marker}-m"
    plan += [["mkdir", "run", "mkdir", "-p", mountpoint]]
    plan += [["mount", "run", "mount", "-t", "tmpfs", "jobmgr-test", mountpoint]]
    hostile.notes["seen"] = probe(hostile.srv, plan, user)


@then("every call failed with EPERM but clone3, which failed with ENOSYS")
def _all_eperm(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    wrong = {n: o for n, o in seen.items() if n in SECCOMP_CALLS and o != "EPERM"}
    assert wrong == {"clone3": "ENOSYS"}, wrong


@then(parsers.parse("a job as {user} may mount: {answer}"))
def _may_mount(hostile: Hostile, answer: str) -> None:
    assert hostile.notes["seen"]["mount"].startswith("ok") is (answer == "yes"), hostile.notes


# ---- root -------------------------------------------------------------------------------------


@when("the admin starts a job as root that tries root things in its own view and on the host")
def _root_things(hostile: Hostile) -> None:
    server, place = hostile.srv, hostile.notes["place"]
    marker = server.marker
    mine = f"/scratch/{marker}"
    hostile.notes["hostname"] = socket.gethostname()
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
    hostile.notes["seen"] = probe(server, plan, "root")


@then(
    "in its own view it wrote its scratch, mounted a tmpfs, bound a directory and set its hostname"
)
def _root_in_view(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    assert seen["ids"] == "ok: 0 0", seen
    for done in ("scratch", "tmpfs", "bind"):
        assert seen[done].startswith("ok"), (done, seen[done])
    assert seen["hostname"] == f"ok: jobmgr-test-{hostile.srv.marker[-8:]}", seen["hostname"]


@then(
    "it could not read the CA's key, write /etc, set the clock, open core_pattern for writing, "
    "reach the launcher's socket, or mount a cgroup filesystem"
)
def _root_not_host(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    for attempt in ("ca.key", "etc", "clock", "core_pattern", "launcher", "cgroup", "cgroup2"):
        assert not seen[attempt].startswith("ok"), (attempt, seen[attempt])


@then(
    parsers.parse(
        "on the host its root was one uid of the range {first:d}-{last:d}, /etc has no marker, "
        "and the hostname is unchanged"
    )
)
def _root_on_host(hostile: Hostile, first: int, last: int) -> None:
    inside, outside, count = hostile.notes["seen"]["map"].removeprefix("ok: ").split()
    assert inside == "0" and count == "1" and first <= int(outside) <= last
    assert markers_on_host(hostile.srv.marker) == []
    assert socket.gethostname() == hostile.notes["hostname"]


# ---- devices ----------------------------------------------------------------------------------


@when(
    parsers.parse(
        "the admin starts a job as {user} that makes a node for the host's disk and opens it, then "
        "opens /dev/null, /dev/zero and /dev/urandom"
    )
)
def _devices(hostile: Hostile, user: str) -> None:
    server = hostile.srv
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
    hostile.notes.update(devices=listing, seen=outcomes(server, job))
    report(f"a job as {user}: {hostile.notes['seen']}; devices.list {listing!r}")


def _devices_list(server: HostileServer, job: str) -> str | None:
    """What the job's cgroup allows: devices.list on v1; on v2 (the v2 VM), the device
    filter programs attached to it, which allow exactly JOB_DEVICES (tests/test_device_filter)."""
    v2 = Path("/sys/fs/cgroup") / server.cgroup_parent / job
    try:
        if v2.is_dir() and (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
            return JOB_DEVICES if attached(str(v2)) == 1 else f"{attached(str(v2))} filters"
        path = Path("/sys/fs/cgroup/devices") / server.cgroup_parent / job / "devices.list"
        return " ".join(path.read_text().split())
    except FileNotFoundError:
        return None


@then("making or opening the disk failed, and the three others opened")
def _disk_refused(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    assert not (seen["mknod"] == "ok" and seen["disk"].startswith("ok")), seen
    assert not seen["disk"].startswith("ok"), seen
    for device in ("/dev/null", "/dev/zero", "/dev/urandom"):
        assert seen[device].startswith("ok"), seen


@then(
    "the job's devices cgroup allowed exactly null, zero, full, random, urandom, tty, ptmx and pts"
)
def _devices_cgroup(hostile: Hostile) -> None:
    assert hostile.notes["devices"] == JOB_DEVICES


# ---- opt-ins ----------------------------------------------------------------------------------


def mountable_server(
    request: pytest.FixtureRequest, hostile: Hostile, name: str, writable: bool
) -> None:
    place: Path = request.getfixturevalue("var_lib_place")
    data = place / "data"
    data.mkdir()
    os.chmod(data, 0o777)  # for a job running as nobody
    (data / name).write_text(f"the host's {name}\n")
    allowed = f"{data}:rw" if writable else str(data)
    confined_server(request, hostile, "--allow-mount", allowed, "--allow-run-as", "nobody")
    hostile.notes.update(data=data, name=name)


@given(parsers.parse('a jobmgr-server allowing jobs to mount a host directory holding "{name}"'))
def _mountable(request: pytest.FixtureRequest, hostile: Hostile, name: str) -> None:
    mountable_server(request, hostile, name, writable=False)


@given(
    parsers.parse(
        'a jobmgr-server allowing jobs to mount a host directory holding "{name}", writable'
    )
)
def _mountable_rw(request: pytest.FixtureRequest, hostile: Hostile, name: str) -> None:
    mountable_server(request, hostile, name, writable=True)


def mount_of(source: Path | str, target: str, writable: bool = False) -> job_pb2.Mount:
    return job_pb2.Mount(source=str(source), target=target, writable=writable)


@when(
    "the admin starts a job as its own uid mounting that directory at /data, which reads "
    "data.txt and writes /data/new.txt"
)
def _reads_mount(hostile: Hostile) -> None:
    plan = [["read", "read", "/data/data.txt"], ["write", "write", "/data/new.txt"]]
    mounts = (mount_of(hostile.notes["data"], "/data"),)
    hostile.notes["seen"] = probe(hostile.srv, plan, "its own uid", mounts=mounts)


@then("the job read data.txt and could not write /data/new.txt")
def _read_not_written(hostile: Hostile) -> None:
    seen = hostile.notes["seen"]
    assert seen["read"] == "ok: the host's data.txt\n", seen
    assert seen["write"] == "EROFS", seen
    assert not (hostile.notes["data"] / "new.txt").exists()


@then("mounting /etc, or that directory writable, is refused as INVALID_ARGUMENT naming the source")
def _mounts_refused(hostile: Hostile) -> None:
    data = hostile.notes["data"]
    for mount, named in ((mount_of("/etc", "/x"), "/etc"), (mount_of(data, "/d", True), str(data))):
        error = refused(hostile.srv, job_pb2.StartRequest(cmd="true", mounts=[mount]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert named in (error.details() or ""), error.details()


@when(
    "the admin starts a job as nobody mounting that directory writable at /out, which writes "
    "/out/result.txt"
)
def _writes_mount(hostile: Hostile) -> None:
    plan = [["write", "write", "/out/result.txt"]]
    mounts = (mount_of(hostile.notes["data"], "/out", writable=True),)
    hostile.notes["seen"] = probe(hostile.srv, plan, "nobody", mounts=mounts)


@then("the host directory holds result.txt, owned by nobody")
def _written_on_host(hostile: Hostile) -> None:
    result = hostile.notes["data"] / "result.txt"
    assert hostile.notes["seen"]["write"] == "ok", hostile.notes["seen"]
    assert result.read_text() == "written by a job\n" and result.stat().st_uid == 65534


@then("a job as its own uid asking for that writable mount is refused as INVALID_ARGUMENT")
def _own_uid_no_rw(hostile: Hostile) -> None:
    mount = mount_of(hostile.notes["data"], "/out", writable=True)
    error = refused(hostile.srv, job_pb2.StartRequest(cmd="true", mounts=[mount]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "named user" in (error.details() or ""), error.details()


@given("a busybox tree in a directory the server allows as a job's root")
def _busybox_root(request: pytest.FixtureRequest, hostile: Hostile, tmp_path: Path) -> None:
    roots = tmp_path / "roots"
    tree = busybox_tree(roots / "busybox")
    confined_server(request, hostile, "--allow-rootfs", str(roots))
    hostile.notes["tree"] = tree


@when(
    "the admin starts a job as its own uid in that tree that reads /etc/os-release, lists /usr "
    "and writes / and /scratch"
)
def _in_tree(hostile: Hostile) -> None:
    server = hostile.srv
    script = (
        "cat /etc/os-release; echo usr: $(ls /usr); touch /new 2>/dev/null || echo no /new; "
        'echo kept > "/scratch/$0" && echo scratch: $(cat "/scratch/$0")'
    )
    request = job_pb2.StartRequest(
        cmd="sh", args=["-c", script, server.marker], rootfs=str(hostile.notes["tree"])
    )
    job = server.stub().Start(request, timeout=30).uuid
    server.wait_ended(job)
    hostile.notes["said"] = server.output(job).decode()
    report(f"a job in a busybox root said: {hostile.notes['said']!r}")


@then("it saw the tree's os-release, an empty /usr, could not write / and wrote /scratch")
def _tree_seen(hostile: Hostile) -> None:
    assert hostile.notes["said"] == (
        'NAME="jobmgr test root"\nID=jobmgr-test\nusr:\nno /new\nscratch: kept\n'
    )


@then(
    "a job asking for a root filesystem outside the allowed directories is refused as "
    "INVALID_ARGUMENT"
)
def _rootfs_refused(hostile: Hostile) -> None:
    error = refused(hostile.srv, job_pb2.StartRequest(cmd="true", rootfs="/usr"))
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
def _no_libseccomp(request: pytest.FixtureRequest, hostile: Hostile, tmp_path: Path) -> None:
    library = shlex.quote(os.path.realpath(_libseccomp()))
    # In a mount namespace of its own the library is an empty file: the server's view only.
    hide = f'mount --bind /dev/null {library} && exec "$@"'
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh")
    hostile.notes["done"] = start_refused(request, tmp_path, prefix=prefix)


def _libseccomp() -> str:
    found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in found.splitlines():
        if "libseccomp.so.2 " in line and "=>" in line:
            return line.split("=>")[1].strip()
    raise AssertionError("libseccomp.so.2 is not installed here")


@when(parsers.parse('jobmgr-server is started with "{flags}"'))
def _started_with(
    request: pytest.FixtureRequest, hostile: Hostile, tmp_path: Path, flags: str
) -> None:
    hostile.notes["done"] = start_refused(request, tmp_path, *shlex.split(flags))


@then(parsers.parse('it exits with status 1 saying "{first}" and "{second}"'))
def _refusal(hostile: Hostile, first: str, second: str) -> None:
    done: subprocess.CompletedProcess[str] = hostile.notes["done"]
    report(f"jobmgr-server refused to start: {done.stderr.strip()}")
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert first in done.stderr and second in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
