"""Boot the test VM, run ``vm._guest`` in it, and judge the summary it leaves behind.

Nothing of a run outlives it: vng and its qemu run in a session of their own that is killed
as a whole on timeout or interrupt, and the shared results directory (which also holds the
scratch disk image) is removed at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import _deps
from ._summary import BOOTED, HOST_TAG, REQUEST, SUMMARY, Request, Summary

CHECKOUT = Path(__file__).resolve().parent.parent

# The scratch disk: sparse, so only what the I/O scenarios and the state directories write
# takes space on the host.
DISK_BYTES = 4 * 1024**3
# A kernel that boots under KVM reaches the guest's first line within seconds; where KVM
# cannot boot it, qemu may hang instead of failing (seen on a host without VMX), so an
# attempt that has not booted by then is given up for emulation (which boots in 35-65 s).
KVM_BOOT_SECONDS = 60.0
# The whole run took 1585-2183 s here under emulation, by the host's load; CI's 90 minutes hold
# make test and make test-long (about 20 minutes) besides.
RUN_SECONDS = 55 * 60.0


@dataclass(frozen=True)
class Machine:
    """How to boot: which kernel, how big a VM, and how long the whole run may take."""

    kernel: str
    memory: str = "3G"
    cpus: int = 2
    timeout: float = RUN_SECONDS
    kvm: bool | None = None  # None: try KVM, fall back to emulation if it cannot boot


def run(machine: Machine, request: Request) -> int:
    """Boot, run the suite inside, print what ran; the exit code for ``make test-v2``."""
    results = Path(tempfile.mkdtemp(prefix="jobmgr-vm-"))
    try:
        os.chmod(results, 0o755)
        disk = results / "scratch.img"
        with open(disk, "wb") as f:
            f.truncate(DISK_BYTES)
        (results / REQUEST).write_text(json.dumps(request.to_json()))
        started = time.monotonic()
        booted_with = _boot_until_booted(machine, results, disk)
        elapsed = time.monotonic() - started
        return _judge(results, booted_with, elapsed)
    finally:
        _remove(results)


def _boot_until_booted(machine: Machine, results: Path, disk: Path) -> str | None:
    """Boot with KVM where it works, else with emulation; the accelerator that booted."""
    tries = ["kvm", "tcg"] if machine.kvm is None and _kvm_usable() else []
    if machine.kvm is True:
        tries = ["kvm"]
    elif not tries:
        tries = ["tcg"]
    for accel in tries:
        falls_back = accel == "kvm" and len(tries) > 1
        _boot(machine, results, disk, accel, KVM_BOOT_SECONDS if falls_back else None)
        if (results / BOOTED).exists():
            return accel
        if falls_back:
            print("vm: KVM cannot boot this kernel here; emulating instead", flush=True)
    return None


def _kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def _boot(
    machine: Machine, results: Path, disk: Path, accel: str, boot_within: float | None
) -> int:
    """Run the VM to its end; killed past the machine's timeout, or when it has not booted
    within ``boot_within`` seconds."""
    guest = f"{shlex.quote(sys.executable)} -m vm._guest {shlex.quote(str(results))}"
    argv = [
        _deps.vng_path(),
        "--run", machine.kernel,
        "--memory", machine.memory,
        "--cpus", str(machine.cpus),
        "--rwdir", str(results),
        "--cwd", str(CHECKOUT),
        "--exec", guest,
        f"--qemu-opts={_devices(disk)}",
    ]  # fmt: skip
    if accel == "tcg":
        argv.append("--disable-kvm")
    print(
        f"vm: booting {machine.kernel} ({accel}, {machine.cpus} CPUs, {machine.memory})", flush=True
    )
    # A session of its own: on timeout or Ctrl-C, vng and its qemu go down together.
    # vng runs its sibling virtme-run through PATH.
    bin_dir = os.path.dirname(_deps.vng_path())
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        if boot_within is not None and not _booted(proc, results / BOOTED, boot_within):
            print(f"vm: not booted after {boot_within:.0f} s; killing the VM", flush=True)
            return _kill(proc)
        return proc.wait(timeout=machine.timeout)
    except subprocess.TimeoutExpired:
        print(f"vm: the run took over {machine.timeout:.0f} s; killing the VM", flush=True)
        return _kill(proc)
    except BaseException:
        _kill(proc)
        raise


def _devices(disk: Path) -> str:
    """qemu options for what vng does not set up as the run needs it.

    The host's root once more, read-only, for the guest to mount with its caches on
    (vm._guest). The scratch disk with its flushes ignored (it is thrown away after the run)
    and its I/O on a thread of its own, off qemu's main loop, which also serves every 9p
    request. vng gives each of its six streams a virtio-serial device of 31 ports, and qemu's
    main loop polls every queue's eventfd on each turn: 660 descriptors, which kept that
    thread busy on a host core of its own under load; two ports a device leave 80.
    """
    return (
        "-global virtio-serial-pci.max_ports=2 "
        f"-fsdev local,id={HOST_TAG},path=/,security_model=none,readonly=on,multidevs=remap "
        f"-device virtio-9p-pci,fsdev={HOST_TAG},mount_tag={HOST_TAG} "
        "-object iothread,id=scratch-io "
        f"-drive if=none,id=scratch,file={disk},format=raw,cache=unsafe "
        "-device virtio-blk-pci,drive=scratch,iothread=scratch-io,serial=scratch"
    )


def _booted(proc: subprocess.Popen[bytes], mark: Path, within: float) -> bool:
    """Whether the guest wrote ``mark`` within ``within`` seconds (or the VM ended)."""
    deadline = time.monotonic() + within
    while not mark.exists() and proc.poll() is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


def _kill(proc: subprocess.Popen[bytes]) -> int:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait()


def _judge(results: Path, accel: str | None, elapsed: float) -> int:
    if accel is None:
        print("vm: FAILED: the VM never started the test run", flush=True)
        return 1
    path = results / SUMMARY
    if not path.exists():
        print(f"vm: FAILED: the VM ended without a summary after {elapsed:.0f} s", flush=True)
        return 1
    summary = Summary.from_json(json.loads(path.read_text()))
    problems = summary.problems()
    booted_at = (results / BOOTED).read_text().strip()
    for figure in summary.figures:
        print(f"vm: measured: {figure}", flush=True)
    print(f"vm: {summary.describe()}", flush=True)
    print(f"vm: booted in {booted_at} s ({accel}); whole run {elapsed:.0f} s", flush=True)
    for problem in problems:
        print(f"vm: FAILED: {problem}", flush=True)
    return 1 if problems else 0


def _remove(results: Path) -> None:
    shutil.rmtree(results)
