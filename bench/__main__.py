"""``python -m bench [--quick] [--rows a,b]``: run the benchmarks, print the table, write
bench/results.json, exit 1 if any target is missed (2 if the bench itself could not run)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Before grpc is imported anywhere: its C core would log connection chatter on stderr.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from jobmgr.cli._malloc import keep_freed_memory

from ._context import QUICK, Context, Sizes
from ._rows_client import client_status
from ._rows_output import fan_out, flat_memory, follow_latency, output_throughput
from ._rows_scale import scale
from ._rows_start import start_latency, start_throughput
from ._server import make_certs
from ._stats import Row, failed_row, format_table

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Group:
    """A function measuring some rows, and those rows' names, units and targets (for the
    failure rows printed in their place if it raises)."""

    run: Callable[[Context], Awaitable[list[Row]]]
    rows: tuple[tuple[str, str, str], ...]


GROUPS: dict[str, Group] = {
    "start-latency": Group(
        start_latency,
        (("start latency median", "ms", "ratio <= 1.5"), ("start latency p99", "ms", "report")),
    ),
    "start-throughput": Group(start_throughput, (("start throughput", "jobs/s", "ratio >= 0.5"),)),
    "output": Group(output_throughput, (("output throughput", "MB/s", "ratio >= 0.7"),)),
    "fan-out": Group(fan_out, (("fan-out aggregate", "MB/s", "ratio >= 0.7"),)),
    "follow-latency": Group(
        follow_latency,
        (
            ("follow latency median", "ms", "ratio <= 3"),
            ("follow latency p99", "ms", "ratio <= 20"),
        ),
    ),
    "scale": Group(
        scale,
        (
            ("scale: jobs running", "jobs", "all"),
            ("scale: Status latency", "ms", "ratio <= 1.5"),
            ("scale: memory per job", "MiB", "<= 1 MiB"),
            ("scale: stop all", "s", "<= 30 s, all gone"),
        ),
    ),
    "flat-memory": Group(flat_memory, (("flat memory", "MiB", "<= 32 MiB"),)),
    "client": Group(client_status, (("client: status wall time", "ms", "ratio <= 1.3"),)),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure jobmgr next to baselines taken in the same run. "
        "Starts its own jobmgr-server and bare grpcio server on 127.0.0.1; needs root.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, fewer repetitions (< 60 s)"
    )
    parser.add_argument(
        "--rows",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run, of: {', '.join(GROUPS)}",
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        print(f"error: unknown row group(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: the bench starts jobmgr-server, which must run as root", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else Sizes()
    keep_freed_memory()
    load_before = _load()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jobmgr-bench-") as tmp:
        workdir = Path(tmp)
        ctx = Context(workdir, make_certs(workdir / "certs"), sizes)
        try:
            rows = asyncio.run(_run(ctx, names))
        finally:
            ctx.close()
    elapsed = time.perf_counter() - began
    print(format_table(rows))
    print(
        f"\n{'quick' if args.quick else 'full'} run, {elapsed:.0f}s, {_machine()}; "
        f"1-min load average {load_before} before, {_load()} after"
    )
    for error in ctx.cleanup_errors:
        print(f"cleanup: {error}", file=sys.stderr)
    args.json.write_text(json.dumps([row.as_json() for row in rows], indent=2) + "\n")
    missed = [row.name for row in rows if row.passed is False]
    if missed or ctx.cleanup_errors:
        print(f"missed: {', '.join(missed) or 'none'}; cleanup errors: {len(ctx.cleanup_errors)}")
        return 1
    return 0


async def _run(ctx: Context, names: list[str]) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        group = GROUPS[name]
        print(f"-- {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            got = await group.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            got = [failed_row(row, unit, target, repr(exc)) for row, unit, target in group.rows]
        for row in got:
            print(f"   {row.name}: {row.value:.4g} {row.unit} (baseline {row.baseline})",
                  file=sys.stderr, flush=True)  # fmt: skip
        print(f"   {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        rows += got
    return rows


def _load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    return f"{os.getloadavg()[0]:.2f}"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} x {cpu}, {mem:.0f} GiB, Linux {platform.release()}"


if __name__ == "__main__":
    sys.exit(main())
