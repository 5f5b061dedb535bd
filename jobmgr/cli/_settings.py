"""jobmgr-server's settings: one row each, in the order the file, --print-config and --help
list them. The TOML file (``_config.load``), the flags and --help (``server.build_parser``)
and --print-config (``_config.render``) are all made from SETTINGS.

A new setting is one row here (section, key, field, parse, render, flag, help, then what
applies of metavar, choices, unset, merge, collect) plus its ServerConfig field in
``_config``, whose default is the setting's default:

    Setting("jobs", "disk_quota", "disk_quota", parse_size, format_size, "--disk-quota",
            "disk space each job may fill", metavar="SIZE", unset="no quota"),
    disk_quota: int | None = None

tests/test_settings.py then asks for its line in docs/usage.md, its key in
docs/jobmgr.example.toml and a value other than the default in its OTHER. A rule between
settings (one within another's bounds) goes in ``ServerConfig.check``. A new per-job limit is
one Part of LIMIT_PARTS (and its Limits field).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobmgr.worker import Limits, Retention

from ._setting import Part, PartError, Record, Setting, laid_over, number, string, strings, whole
from ._units import format_duration, format_size, parse_duration, parse_size

# [limits.default] and [limits.max], --default-limit and --max-limit: key -> Limits field.
LIMIT_PARTS = Record(
    Limits,
    (
        Part("cpu", "cpu", number("a number of CPUs, e.g. 0.5")),
        Part("memory", "memory_bytes", parse_size, format_size),
        Part("io_read", "io_read_bps", parse_size, format_size),
        Part("io_write", "io_write_bps", parse_size, format_size),
        Part("pids", "pids", whole("a whole number of processes")),
        Part("disk", "disk_bytes", parse_size, format_size),
    ),
    noun="limit",
)

RETENTION_PARTS = Record(
    Retention,
    (
        Part("count", "count", whole("a whole number of jobs")),
        Part("max_age", "max_age", parse_duration, format_duration),
    ),
    noun="retention setting",
)


def _count(value: Any) -> int:
    found = whole("a whole number >= 1")(value)
    if found < 1:
        raise ValueError(f"must be a whole number >= 1, got {value!r}")
    return found


# What an unset connection limit means (ConnectionLimits.for_fd_limit derives it).
_DERIVED = "derived from the fd limit"


def _roles(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise PartError(f"must be a table of role = [calls...], got {value!r}")
    try:
        return {role: strings(calls) for role, calls in value.items()}
    except ValueError as exc:
        raise PartError(str(exc)) from None


def _uid_range(value: Any) -> tuple[int, int]:
    first, sep, last = str(value).partition("-")
    try:
        if sep and first.strip().isdigit() and last.strip().isdigit():
            return int(first), int(last)
    except ValueError:
        pass
    raise ValueError(f"must be FIRST-LAST, two uids, e.g. 1879048192-1879113727; got {value!r}")


def _shown_range(uids: tuple[int, int]) -> str:
    return f"{uids[0]}-{uids[1]}"


def _role_lists(roles: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    return {role: list(calls) for role, calls in roles.items()}


def _roles_merged(given: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    return {**before, **given}  # a role given replaces that role's calls; the others stay


# A table: a row's columns read better side by side than one to a line.
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("server", "host", "host", string, str, "--host", "address to listen on"),
    Setting(
        "server", "port", "port", whole("a port number"), int, "--port",
        "port to listen on (0: any free port)",
    ),
    Setting(
        "server", "ca", "ca", string, str, "--ca",
        "CA certificate that client certificates must chain to",
    ),
    Setting("server", "cert", "cert", string, str, "--cert", "server certificate"),
    Setting("server", "key", "key", string, str, "--key", "server private key"),
    Setting(
        "server", "crl", "crl", string, str, "--crl",
        "certificate revocation list (PEM, signed by the CA; `jobmgr-certs revoke` writes "
        "it): a client certificate it lists can make no call; SIGHUP reloads it",
        metavar="PATH", unset="nothing is revoked",
    ),
    Setting(
        "server", "log_format", "log_format", string, str, "--log-format",
        "stderr log lines, one per RPC (method, caller, role, job, code, duration)",
        choices=("text", "json"),
    ),
    Setting(
        "jobs", "state_dir", "state_dir", string, str, "--state-dir",
        "where job records and output are kept",
    ),
    Setting(
        "jobs", "cgroup_parent", "cgroup_parent", string, str, "--cgroup-parent",
        "cgroup (in every hierarchy) under which each job gets its own",
    ),
    Setting(
        "jobs", "grace", "grace", parse_duration, format_duration, "--grace",
        "time between SIGTERM and SIGKILL when a job is stopped without a grace period "
        "(5, 5s, 1m)",
        metavar="DURATION",
    ),
    Setting(
        "jobs", "max_running", "max_running", whole("a number of jobs"), int, "--max-running",
        "refuse new jobs (RESOURCE_EXHAUSTED) while N run",
        metavar="N", unset="no cap",
    ),
    Setting(
        "jobs", "output_cap", "output_cap", parse_size, format_size, "--output-cap",
        "output kept per job; past it output is dropped and the job goes on",
        metavar="SIZE",
    ),
    Setting(
        "jobs", "run_as", "run_as", string, str, "--run-as",
        "user jobs run as when they do not ask for one (root: root of a user namespace of "
        "the job's own)",
        metavar="USER", unset="a uid of the job's own, from uid_range",
    ),
    Setting(
        "jobs", "allowed_run_as", "allowed_run_as", strings, list, "--allow-run-as",
        "a user jobs may run as; repeat for more; replaces the file's list; "
        "'*' allows any user, root included",
        metavar="USER", collect=True,
    ),
    Setting(
        "jobs", "retention", "retention", RETENTION_PARTS.parse, RETENTION_PARTS.render,
        "--retain",
        "finished jobs to keep, oldest pruned first: count=1000, max_age=30d or both",
        metavar="count=N,max_age=DURATION", unset="keep everything", merge=laid_over,
    ),
    Setting(
        "limits", "default", "default_limits", LIMIT_PARTS.parse, LIMIT_PARTS.render,
        "--default-limit",
        "limits of jobs that do not set them (cpu, memory, io_read, io_write, pids, disk; "
        "0 = unlimited); repeatable",
        metavar="NAME=VALUE,...", merge=laid_over,
    ),
    Setting(
        "limits", "max", "max_limits", LIMIT_PARTS.parse, LIMIT_PARTS.render, "--max-limit",
        "the most a job may ask for; more is refused with INVALID_ARGUMENT",
        metavar="NAME=VALUE,...", unset="no maximum", merge=laid_over,
    ),
    Setting(
        "sandbox", "uid_range", "uid_range", _uid_range, _shown_range, "--uid-range",
        "uids (and gids) jobs get one each of; must hold no user, group or subordinate id "
        "of the host",
        metavar="FIRST-LAST",
    ),
    Setting(
        "sandbox", "hidden_paths", "hidden_paths", strings, list, "--hide",
        "host path jobs see as empty; repeat for more; replaces the file's list (the state "
        "directory and the certificates' directories are hidden too)",
        metavar="PATH", collect=True,
    ),
    Setting(
        "sandbox", "visible_paths", "visible_paths", strings, list, "--show",
        "path left visible to jobs though hidden by default (/home, the certificates' "
        "directory...); repeat for more",
        metavar="PATH", unset="none", collect=True,
    ),
    Setting(
        "sandbox", "mount_sources", "mount_sources", strings, list, "--allow-mount",
        "host path (and what is below it) jobs may mount with --mount, read-only; PATH:rw "
        "allows writable mounts too; repeat for more",
        metavar="PATH[:rw]", unset="none", collect=True,
    ),
    Setting(
        "sandbox", "rootfs_dirs", "rootfs_dirs", strings, list, "--allow-rootfs",
        "directory (and those below it) jobs may use as their root with --rootfs; repeat for "
        "more",
        metavar="DIR", unset="none", collect=True,
    ),
    Setting(
        "sandbox", "user_namespaces", "user_namespaces", string, str, "--user-namespaces",
        "whether jobs may make user namespaces of their own",
        choices=("deny", "allow"),
    ),
    Setting(
        "access", "user_sees", "user_sees", string, str, "--user-sees",
        "jobs a caller with role user may see: all, or only those it started",
        choices=("all", "own"),
    ),
    Setting(
        "access", "roles", "roles", _roles, _role_lists, None,
        "role (client certificate's Subject O) -> the calls it may make",
        merge=_roles_merged,
    ),
    Setting(
        "connections", "max_connections", "max_connections", _count, int, "--max-connections",
        "connections held at once; past it a new one is closed as soon as it is accepted",
        metavar="N", unset=_DERIVED,
    ),
    Setting(
        "connections", "connections_per_peer", "connections_per_peer", _count, int,
        "--connections-per-peer",
        "connections one peer address (IPv6: one /64) may hold; past it the newest is "
        "closed, as a rule before its TLS handshake ends",
        metavar="N", unset=_DERIVED,
    ),
    Setting(
        "connections", "handshake_timeout", "handshake_timeout", parse_duration,
        format_duration, "--handshake-timeout",
        "time a new connection has to finish TLS and start HTTP/2, or it is closed",
        metavar="DURATION",
    ),
    Setting(
        "connections", "idle_timeout", "idle_timeout", parse_duration, format_duration,
        "--idle-timeout",
        "a connection with no call in progress this long is closed (HTTP/2 GOAWAY)",
        metavar="DURATION",
    ),
    Setting(
        "connections", "streams_per_connection", "streams_per_connection", _count, int,
        "--streams-per-connection",
        "calls one connection may have open at once (HTTP/2 MAX_CONCURRENT_STREAMS)",
        metavar="N",
    ),
    Setting(
        "connections", "streams_per_caller", "streams_per_caller", _count, int,
        "--streams-per-caller",
        "streams (Output, health Watch, reflection) one certificate identity may have open "
        "at once; past it RESOURCE_EXHAUSTED",
        metavar="N", unset=_DERIVED,
    ),
    Setting(
        "connections", "rpcs_in_flight", "rpcs_in_flight", _count, int, "--rpcs-in-flight",
        "calls in progress on the whole server; past it RESOURCE_EXHAUSTED",
        metavar="N", unset=_DERIVED,
    ),
)
# fmt: on
