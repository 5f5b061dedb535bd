"""``python -m vm``: run the kernel-facing suite in a cgroup-v2-only VM (``make test-v2``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from . import _deps, _host
from ._summary import Request

# The features that meet the kernel (cgroups, namespaces, process lifecycle, output pipes),
# and the cgroup driver's own tests against the real v2 kernel.
# The slowest first (contained: a 5 GiB output flood takes minutes under emulation), so that
# the pytest workers share out the rest while it runs.
KERNEL_FACING = (
    "steps/test_contained.py",
    "steps/test_lifecycle.py",
    "steps/test_output.py",
    "steps/test_isolation.py",
    "steps/test_cgroups.py",
    "steps/test_confinement.py",
    "tests/test_cgroups_v2.py",
    "tests/test_placement.py",
)
# Run a second time with cgroup2 remounted with nsdelegate: a job must not lift its limits on
# either kind of mount.
NSDELEGATE = (
    "steps/test_cgroups.py::"
    "test_a_root_job_that_mounts_the_cgroup_filesystem_cannot_lift_its_own_memory_limit",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vm",
        description="Boot a cgroup-v2-only VM (virtme-ng, the host's root shared read-only) "
        "and run the kernel-facing tests inside it against the v2 driver. Exits non-zero if "
        "any test failed or was skipped, or if the v1 driver was chosen.",
    )
    parser.add_argument(
        "--install-missing",
        action="store_true",
        help="apt-get install the Debian packages the VM needs, if missing",
    )
    parser.add_argument("--kernel", help="kernel image to boot (default: newest /boot/vmlinuz-*)")
    parser.add_argument("--memory", default="3G", help="guest memory (default: %(default)s)")
    parser.add_argument(
        "--cpus",
        type=int,
        default=min(os.cpu_count() or 2, 4),
        help="guest CPUs (default: the host's, at most 4)",
    )
    parser.add_argument(
        "--kvm",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: KVM where it can boot the kernel, else emulation",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=_host.RUN_SECONDS,
        help="seconds the whole VM run may take (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="pytest-xdist workers in the guest (default: %(default)s)",
    )
    parser.add_argument("-k", dest="keyword", help="only tests matching this pytest -k expression")
    parser.add_argument("targets", nargs="*", help="tests to run instead of the kernel-facing set")
    args = parser.parse_args(argv)
    # SIGTERM (CI's timeout, `kill`) unwinds as Ctrl-C does, so the VM goes down with the run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.install_missing:
        _deps.install_missing()
    lacking = _deps.missing()
    if lacking or not os.access(_deps.vng_path(), os.X_OK):
        needs = [n.what for n in lacking] + (
            [] if os.access(_deps.vng_path(), os.X_OK) else ["virtme-ng (pip install -e '.[vm]')"]
        )
        print(f"vm: missing {', '.join(needs)}; `make test-v2` installs them", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("vm: run as root (the guest runs the suite as the host user)", file=sys.stderr)
        return 2
    kernel = args.kernel or _deps.kernels()[-1]
    targets = args.targets or [t for t in KERNEL_FACING if (_host.CHECKOUT / t).exists()]
    options = ["-k", args.keyword] if args.keyword else []
    kvm = {"auto": None, "on": True, "off": False}[args.kvm]
    machine = _host.Machine(kernel, args.memory, args.cpus, args.timeout, kvm)
    request = Request(targets, options, args.workers, [] if args.targets else list(NSDELEGATE))
    return _host.run(machine, request)


if __name__ == "__main__":
    sys.exit(main())
