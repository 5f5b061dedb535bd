"""The acceptance suite's fixtures and shared steps live in steps/ (fixtures_*.py and
_*_steps.py); this file wires them in, for every feature alike. What steps, tests and the
bench share to drive jobmgr from outside is the harness/ package."""

# Before anything imports grpc: jobmgr.api sets the TLS 1.3 floor, which grpc reads only once.
import functools
import signal

import pytest

import jobmgr.api  # noqa: F401
from jobmgr.worker.cgroups import CgroupError, detect_driver

# The harness's asserts explain themselves as the tests' do.
pytest.register_assert_rewrite("harness")

# A suite started in the background of a non-interactive shell (`make test &`, nohup) inherits
# SIGINT ignored, and every program it starts would too: the Ctrl-C scenarios would then test
# nothing but the shell. Programs started from here get SIGINT's default, as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = [
    "steps.fixtures_scenario",
    "steps.fixtures_pki",
    "steps.fixtures_worker",
    "steps.fixtures_server",
    "steps._worker_steps",
    "steps._grpc_steps",
    "steps._cli_steps",
    "steps._server_steps",
    "steps._certfile_steps",
    "steps._handshake_steps",
    "steps._server_files_steps",
    "steps._limit_steps",
    "steps._flood_steps",
    "steps._log_line_steps",
    "steps._identity_steps",
    "steps._revocation_steps",
    "steps._reload_steps",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A scenario tagged @known_gap states a promise not kept yet (each is in SECURITY.md):
    it must keep failing until it is mended, and then the tag must go."""
    for item in items:
        if item.get_closest_marker("known_gap"):
            item.add_marker(pytest.mark.xfail(reason="known gap, see SECURITY.md", strict=True))
        if item.get_closest_marker("known_gap_cgroup_v1") and _cgroup_version() == 1:
            reason = "known gap on cgroup v1, see SECURITY.md"
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


@functools.cache
def _cgroup_version() -> int | None:
    """The version of the cgroup driver this machine gets (the one every worker here uses)."""
    try:
        return detect_driver("jobmgr-test-probe").version
    except CgroupError:
        return None
