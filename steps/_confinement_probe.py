"""The program features/confinement.feature runs inside jobs: it tries what it is told and
prints one JSON line of what happened, so a scenario can say exactly which attempt got through.

Run as ``python3 -c SOURCE MARKER PLAN``: PLAN is a JSON list of ``[label, probe, arg...]``;
for each, as soon as it is done, a line ``{"label": ..., "outcome": ...}`` where the outcome is
``"ok"``, ``"ok: <value>"`` or the errno's name (``"EPERM"``). Only the standard library: it
runs on the host's python3.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

# x86_64 system call numbers, for the calls a job's seccomp filter refuses.
SYSCALLS = {
    "unshare": 272,
    "clone3": 435,
    "keyctl": 250,
    "add_key": 248,
    "bpf": 321,
    "perf_event_open": 298,
    "kexec_load": 246,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "swapoff": 168,
    "reboot": 169,
    "settimeofday": 164,
    "clock_settime": 227,
    "acct": 163,
    "userfaultfd": 323,
    "open_by_handle_at": 304,
    "iopl": 172,
    "ioperm": 173,
    "mount": 165,
    "syslog": 103,
    "quotactl": 179,
}
CLONE_NEWUSER = 0x10000000
LIBC = ctypes.CDLL(None, use_errno=True)


def failure(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def write(path: str, text: str = "written by a job\n") -> str:
    with open(path, "w") as f:
        f.write(text)
    return "ok"


def read(path: str) -> str:
    with open(path, "rb") as f:
        return "ok: " + f.read(4096).decode(errors="replace")


def listing(path: str) -> str:
    return "ok: " + " ".join(sorted(os.listdir(path)))


def connect(address: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(address.replace("@", "\0", 1) if address.startswith("@") else address)
    return "ok"


def fill(path: str, most: str) -> str:
    """Write 1 MiB at a time until a write fails or ``most`` MiB are written."""
    written = 0
    chunk = b"j" * (1 << 20)
    with open(path, "wb") as f:
        try:
            while written < int(most) << 20:
                written += f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            return f"{failure(exc)} after {written}"
    return f"ok: {written}"


def syscall(name: str, *args: str) -> str:
    result = LIBC.syscall(SYSCALLS[name], *(ctypes.c_long(int(a, 0)) for a in args))
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return f"ok: {result}"


def status(*fields: str) -> str:
    with open("/proc/self/status") as f:
        lines = [line.split(":", 1) for line in f.read().splitlines()]
    found = {key: value.strip() for key, value in lines if key in fields}
    return "ok: " + json.dumps(found)


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr.strip()[:300]}"
    return "ok: " + done.stdout.strip()


def mknod(path: str, kind: str, major: str, minor: str) -> str:
    mode = 0o600 | (0o060000 if kind == "b" else 0o020000)
    os.mknod(path, mode, os.makedev(int(major), int(minor)))
    return "ok"


def open_device(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return "ok: " + str(len(os.read(fd, 512)))
    finally:
        os.close(fd)


def hostname(name: str) -> str:
    socket.sethostname(name)
    return "ok: " + socket.gethostname()


def uid_map() -> str:
    with open("/proc/self/uid_map") as f:
        return "ok: " + " ".join(f.read().split())


def ids() -> str:
    return f"ok: {os.getuid()} {os.getgid()}"


def open_write(path: str) -> str:
    """Open for writing, and write nothing."""
    with open(path, "a"):
        return "ok"


def sleep(seconds: str) -> str:
    time.sleep(float(seconds))
    return "ok"


def hog() -> str:
    held = []
    while True:
        held.append(b"h" * (1 << 20))


def kill_marked(marker: str) -> str:
    """SIGKILL every process this job can see whose command line holds ``marker``."""
    killed = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    os.kill(int(pid), 9)
                    killed.append(pid)
        except OSError:
            continue
    return "ok: " + " ".join(killed)


PROBES: dict[str, Callable[..., str]] = {
    "write": write,
    "read": read,
    "list": listing,
    "connect": connect,
    "fill": fill,
    "syscall": syscall,
    "status": status,
    "run": run,
    "mknod": mknod,
    "open": open_device,
    "hostname": hostname,
    "uid_map": uid_map,
    "ids": ids,
    "kill_marked": kill_marked,
    "open_write": open_write,
    "sleep": sleep,
    "hog": hog,
}


def main() -> None:
    plan: list[list[str]] = json.loads(sys.argv[2])
    for label, probe, *args in plan:
        try:
            outcome = PROBES[probe](*args)
        except OSError as exc:
            outcome = failure(exc)
        except Exception as exc:  # a probe that cannot even try says why
            outcome = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"label": label, "outcome": outcome}), flush=True)


if __name__ == "__main__":
    main()
