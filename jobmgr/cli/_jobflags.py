"""The per-job flags of ``jobmgr-client start`` and ``run``, and the JobSpec they make."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from jobmgr.client._types import JobSpec, Limits, Mount

from ._units import parse_duration, parse_size


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """Limits, environment, working directory, timeout and user of the job to start."""
    limits = parser.add_argument_group(
        "limits",
        "Unset limits take the server's defaults; 0 means unlimited. Sizes are "
        "powers of 1024: 256M = 256 MiB.",
    )
    limits.add_argument(
        "--cpu",
        type=_typed(float, "a number of CPUs"),
        metavar="CPUS",
        help="CPUs worth of time per second, e.g. 0.5",
    )
    limits.add_argument(
        "--memory",
        type=_typed(parse_size),
        metavar="SIZE",
        help="memory (swap included) before the OOM killer fires, e.g. 256M",
    )
    limits.add_argument(
        "--io-read",
        type=_typed(parse_size),
        metavar="SIZE",
        help="bytes per second read from each block device, e.g. 10M",
    )
    limits.add_argument(
        "--io-write",
        type=_typed(parse_size),
        metavar="SIZE",
        help="bytes per second written to each block device, e.g. 10M",
    )
    limits.add_argument(
        "--pids",
        type=_typed(int, "a whole number"),
        metavar="N",
        help="processes and threads alive at once, e.g. 100",
    )
    limits.add_argument(
        "--disk",
        type=_typed(parse_size),
        metavar="SIZE",
        help="what the job may write to its scratch directory, /tmp, /var/tmp and /dev/shm "
        "together, e.g. 1G; kept in its memory, so at most --memory; past it: ENOSPC",
    )
    job = parser.add_argument_group("the job's settings")
    job.add_argument(
        "--env",
        action="append",
        type=_env_pair,
        default=[],
        metavar="KEY=VALUE",
        help="set a variable in the job's environment (repeatable); the job "
        "otherwise starts from a minimal clean one: PATH, HOME=/, LANG=C.UTF-8",
    )
    job.add_argument(
        "--inherit-env",
        action="store_true",
        help="pass this client's whole environment to the job (--env still wins)",
    )
    job.add_argument(
        "--cwd",
        metavar="DIR",
        help="absolute working directory (default: /scratch, the job's own writable directory)",
    )
    job.add_argument(
        "--timeout",
        type=_typed(parse_duration),
        metavar="DURATION",
        help="maximum runtime, e.g. 30s or 1h; then the job is stopped with "
        "the grace period and its reason says it timed out",
    )
    job.add_argument(
        "--run-as",
        metavar="USER",
        help="user to run as, if the server allows it (default: the server's, normally a uid "
        "of the job's own); root runs it as root of a user namespace of its own",
    )
    job.add_argument(
        "--mount",
        action="append",
        type=_mount,
        default=[],
        metavar="SRC:DST[:rw]",
        help="bind the server's path SRC at DST in the job's view, read-only unless :rw "
        "(repeatable; only sources the server's configuration allows)",
    )
    job.add_argument(
        "--rootfs",
        metavar="DIR",
        help="use the server's directory tree DIR as the job's root, read-only, instead of "
        "the server's own root (only where the server's configuration allows it)",
    )


def add_grace_flag(parser: argparse.ArgumentParser, *, what: str) -> None:
    parser.add_argument(
        "--grace",
        type=_typed(parse_duration),
        metavar="DURATION",
        help=f"time between SIGTERM and SIGKILL when {what} (default: the server's)",
    )


def job_spec(args: argparse.Namespace) -> JobSpec:
    """The job described by the parsed flags and ``args.argv``."""
    return JobSpec(
        argv=[os.fsencode(arg) for arg in args.argv],  # exact bytes, whatever the encoding
        limits=Limits(
            cpu=args.cpu,
            memory_bytes=args.memory,
            io_read_bps=args.io_read,
            io_write_bps=args.io_write,
            pids=args.pids,
            disk_bytes=args.disk,
        ),
        env=_environment(args.inherit_env, args.env),
        cwd=args.cwd,
        timeout=args.timeout,
        run_as=args.run_as,
        mounts=tuple(args.mount),
        rootfs=args.rootfs,
    )


def _environment(inherit: bool, pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    env = {}
    if inherit:
        # A variable whose name or value is not UTF-8 cannot travel in a proto string.
        env = {k: v for k, v in os.environ.items() if _is_text((k, v))}
    env.update(pairs)
    return env


def _is_text(items: Sequence[str]) -> bool:
    try:
        for item in items:
            item.encode()
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 argument
        return False
    return True


def _mount(text: str) -> Mount:
    source, sep, rest = text.partition(":")
    target, _, mode = rest.partition(":")
    if not sep or not source or not target or mode not in ("", "rw", "ro"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: write SRC:DST or SRC:DST:rw, e.g. --mount /srv/data:/data"
        )
    return Mount(source=source, target=target, writable=mode == "rw")


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. --env LANG=C")
    return key, value


def _typed(parse: Callable[[str], Any], what: str = "") -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {what}" if what else str(exc)
            ) from None
        if not 0 <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number >= 0")
        return value

    return convert
