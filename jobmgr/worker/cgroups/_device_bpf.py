"""The cgroup v2 device filter: a small fixed BPF_PROG_TYPE_CGROUP_DEVICE program.

cgroup v2 has no devices.allow; the kernel runs the programs attached to a process's cgroup
(and its ancestors) on every open and mknod of a device node, and refuses the access when one
returns 0. The program is the same for every job, made from the device table: for each
device, compare type, major (and minor), allow on a match; deny at the end. It is loaded once
per launcher and attached to each job's cgroup. runc generates such a program with a BPF
assembler library, crun writes its instructions out as this does; for a dozen fixed
comparisons, no library is worth carrying.

    r2 = ctx->access_type            ; (access << 16) | type
    w2 &= 0xffff                     ; type: 1 block, 2 char
    r3 = ctx->major
    r4 = ctx->minor
    per device:  if r2 != type goto next; if r3 != major goto next;
                 [if r4 != minor goto next;] r0 = 1; exit
    r0 = 0; exit
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import struct

from .._errors import WorkerError
from ._device_rules import Device

# struct bpf_insn: code, dst_reg:4 | src_reg:4, off, imm
_INSN = struct.Struct("<BBhi")
_LDX_W, _AND32_K, _JNE_K, _MOV64_K, _EXIT = 0x61, 0x54, 0x55, 0xB7, 0x95
_TYPES = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR

BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_QUERY = 5, 8, 16
BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE = 15, 6
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return _INSN.pack(code, dst | src << 4, off, imm)


def program(devices: tuple[Device, ...]) -> bytes:
    """The filter's instructions: allow exactly ``devices``, any access."""
    code = [
        _insn(_LDX_W, dst=2, src=1, off=0),
        _insn(_AND32_K, dst=2, imm=0xFFFF),
        _insn(_LDX_W, dst=3, src=1, off=4),
        _insn(_LDX_W, dst=4, src=1, off=8),
    ]
    for device in devices:
        checks = [(2, _TYPES[device.kind]), (3, device.major)]
        if device.minor is not None:
            checks.append((4, device.minor))
        # Each check jumps past the rest of this device's block: the checks after it and the
        # two instructions that allow.
        for i, (register, value) in enumerate(checks):
            code.append(_insn(_JNE_K, dst=register, off=len(checks) - i - 1 + 2, imm=value))
        code += [_insn(_MOV64_K, dst=0, imm=1), _insn(_EXIT)]
    code += [_insn(_MOV64_K, dst=0, imm=0), _insn(_EXIT)]
    return b"".join(code)


def _bpf(command: int, attr: bytes) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise WorkerError(f"no device filter for cgroup v2 on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)
    result = int(libc.syscall(number, command, buf, 128))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


@functools.cache
def load(devices: tuple[Device, ...]) -> int:
    """The filter, loaded into the kernel once: its fd (kept for the process's life)."""
    code = ctypes.create_string_buffer(program(devices))
    license = ctypes.create_string_buffer(b"GPL")
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level,
    # log_size, log_buf, kern_version
    attr = struct.pack(
        "<IIQQIIQI",
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(code.raw) // _INSN.size,
        ctypes.addressof(code),
        ctypes.addressof(license),
        0, 0, 0, 0,
    )  # fmt: skip
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        raise WorkerError(f"cannot load the jobs' cgroup v2 device filter: {exc}") from exc


def attach(cgroup_dir: str, devices: tuple[Device, ...]) -> None:
    """Attach the filter for ``devices`` to the cgroup v2 directory ``cgroup_dir``."""
    prog = load(devices)
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags
        _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", fd, prog, BPF_CGROUP_DEVICE, 0))
    except OSError as exc:
        raise WorkerError(f"cannot attach the device filter to {cgroup_dir}: {exc}") from exc
    finally:
        os.close(fd)


def attached(cgroup_dir: str) -> int:
    """How many device filters are attached to the cgroup v2 directory ``cgroup_dir``."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ids = ctypes.create_string_buffer(4 * 64)
        # BPF_PROG_QUERY: target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
        query = struct.pack("<IIIIQI", fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), 64)
        attr = ctypes.create_string_buffer(query, 128)
        number = _SYS_BPF[platform.machine()]
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, BPF_PROG_QUERY, attr, 128) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        count: int = struct.unpack_from("<I", attr.raw, 24)[0]
        return count
    finally:
        os.close(fd)
