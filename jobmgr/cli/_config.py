"""jobmgr-server's configuration: built-in defaults, then a TOML file, then flags, each
overriding the one before. ``render`` writes the effective result back as TOML.

The file's shape (every key optional; docs/jobmgr.example.toml explains each):

    [server]          host, port, ca, cert, key, log_format
    [jobs]            state_dir, cgroup_parent, grace, max_running, output_cap,
                      run_as, allowed_run_as
    [jobs.retention]  count, max_age
    [limits.default]  cpu, memory, io_read, io_write, pids
    [limits.max]      cpu, memory, io_read, io_write, pids
    [access]          user_sees ("all" or "own")
    [access.roles]    ROLE = [calls...]
    [connections]     max_connections, connections_per_peer, handshake_timeout,
                      idle_timeout, streams_per_connection, streams_per_caller,
                      rpcs_in_flight

Unknown sections and keys are errors: a misspelt limit must not be silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobmgr.api import DEFAULT_ROLES, ConnectionLimits, role_policy
from jobmgr.worker import DEFAULT_LIMITS, InvalidSpec, Limits

from ._units import format_duration, format_size, parse_duration, parse_size

GiB = 1024**3
ANY_USER = "*"

# Limit names in the file and on the command line -> Limits fields, with how to read them.
LIMIT_FIELDS: Mapping[str, tuple[str, Callable[[Any], float | int]]] = {
    "cpu": ("cpu", lambda value: _number(value, "a number of CPUs, e.g. 0.5")),
    "memory": ("memory_bytes", parse_size),
    "io_read": ("io_read_bps", parse_size),
    "io_write": ("io_write_bps", parse_size),
    "pids": ("pids", lambda value: int(_number(value, "a whole number of processes"))),
}


class ConfigError(ValueError):
    """The configuration is not usable; the message names the key and what is wrong."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything jobmgr-server can be told. None means unset: no cap, no maximum."""

    host: str = "localhost"
    port: int = 31234
    ca: str = "./certs/ca.pem"
    cert: str = "./certs/server.pem"
    key: str = "./certs/server.key"
    log_format: str = "text"
    state_dir: str = "/var/lib/jobmgr"
    cgroup_parent: str = "jobmgr"
    grace: float = 5.0
    max_running: int | None = None
    output_cap: int = GiB
    run_as: str = "nobody"
    allowed_run_as: tuple[str, ...] = ("nobody",)
    retain_count: int | None = None
    retain_age: float | None = None
    default_limits: Limits = DEFAULT_LIMITS
    max_limits: Limits | None = None
    user_sees: str = "all"
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    # Connection limits; None: derived from the file descriptor limit at start.
    max_connections: int | None = None
    connections_per_peer: int | None = None
    handshake_timeout: float = 5.0
    idle_timeout: float = 300.0
    streams_per_connection: int = 100
    streams_per_caller: int | None = None
    rpcs_in_flight: int | None = None

    @property
    def any_user_allowed(self) -> bool:
        return ANY_USER in self.allowed_run_as

    def with_changes(self, changes: Mapping[str, Any]) -> ServerConfig:
        """This configuration with ``changes`` applied. Limits merge limit by limit, roles role
        by role (a role given replaces that role's calls; the others stay)."""
        changes = dict(changes)
        if "default_limits" in changes:
            changes["default_limits"] = changes["default_limits"].merged_over(self.default_limits)
        if "max_limits" in changes:
            maxima = changes["max_limits"].merged_over(self.max_limits or Limits())
            changes["max_limits"] = None if maxima == Limits() else maxima
        if "roles" in changes:
            changes["roles"] = {**self.roles, **changes["roles"]}
        return dataclasses.replace(self, **changes)

    def connection_limits(self, fds: int) -> ConnectionLimits:
        """The connection limits set here, the others derived for ``fds`` file descriptors;
        ValueError names one that is not a positive number."""
        return ConnectionLimits.for_fd_limit(
            fds, **{name: getattr(self, name) for name in CONNECTION_FIELDS}
        )

    def check(self) -> None:
        """Raise ConfigError unless the values make sense together."""
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be between 0 and 65535, got {self.port}")
        if self.log_format not in ("text", "json"):
            problems.append(f"log_format must be text or json, got {self.log_format!r}")
        if self.max_running is not None and self.max_running < 1:
            problems.append(f"max_running must be >= 1, got {self.max_running}")
        if self.output_cap < 1:
            problems.append(f"output_cap must be at least 1 byte, got {self.output_cap}")
        if self.retain_count is not None and self.retain_count < 0:
            problems.append(f"retention count must be >= 0, got {self.retain_count}")
        if self.user_sees not in ("all", "own"):
            problems.append(f"user_sees must be all or own, got {self.user_sees!r}")
        if not self.any_user_allowed and self.run_as not in self.allowed_run_as:
            problems.append(
                f"run_as {self.run_as!r} is not in allowed_run_as "
                f"{list(self.allowed_run_as)}: jobs could not run at all"
            )
        if self.max_limits is not None:
            try:
                self.default_limits.check_within(self.max_limits)
            except InvalidSpec as exc:
                problems.append(f"default limits above the maxima: {exc}")
        try:
            role_policy(self.roles)
        except ValueError as exc:
            problems.append(str(exc))
        try:
            self.connection_limits(fds=1024)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))


def load(path: str | Path) -> dict[str, Any]:
    """The settings a TOML file makes, as ServerConfig field -> value."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}") from None
    try:
        return _from_document(document)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None


CONNECTION_FIELDS = (
    *("max_connections", "connections_per_peer", "handshake_timeout", "idle_timeout"),
    *("streams_per_connection", "streams_per_caller", "rpcs_in_flight"),
)
_DERIVED = "derived from the file descriptor limit at start, logged then"


def parse_count(value: Any) -> int:
    """A count of at least 1 ("32" or 32); ValueError if it is not one."""
    number = _number(value, "a whole number >= 1")
    if number != int(number) or number < 1:
        raise ValueError(f"must be a whole number >= 1, got {value!r}")
    return int(number)


# [section] key -> (ServerConfig field, how to read the value).
_SCALARS: Mapping[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("server", "host"): ("host", lambda v: _string(v)),
    ("server", "port"): ("port", lambda v: int(_number(v, "a port number"))),
    ("server", "ca"): ("ca", lambda v: _string(v)),
    ("server", "cert"): ("cert", lambda v: _string(v)),
    ("server", "key"): ("key", lambda v: _string(v)),
    ("server", "log_format"): ("log_format", lambda v: _string(v)),
    ("jobs", "state_dir"): ("state_dir", lambda v: _string(v)),
    ("jobs", "cgroup_parent"): ("cgroup_parent", lambda v: _string(v)),
    ("jobs", "grace"): ("grace", parse_duration),
    ("jobs", "max_running"): ("max_running", lambda v: int(_number(v, "a number of jobs"))),
    ("jobs", "output_cap"): ("output_cap", parse_size),
    ("jobs", "run_as"): ("run_as", lambda v: _string(v)),
    ("jobs", "allowed_run_as"): ("allowed_run_as", lambda v: tuple(_strings(v))),
    ("jobs.retention", "count"): ("retain_count", lambda v: int(_number(v, "a number of jobs"))),
    ("jobs.retention", "max_age"): ("retain_age", parse_duration),
    ("access", "user_sees"): ("user_sees", lambda v: _string(v)),
    **{
        ("connections", name): (name, parse_duration if name.endswith("timeout") else parse_count)
        for name in CONNECTION_FIELDS
    },
}
_TABLES = {"server", "jobs", "jobs.retention", "limits.default", "limits.max", "access"}
_TABLES |= {"connections"}
_TABLES |= {"access.roles", "limits"}


def _from_document(document: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for section, table in _flatten(document).items():
        if section not in _TABLES:
            raise ConfigError(f"unknown section [{section}]")
        if section == "access.roles":
            try:
                values["roles"] = {role: tuple(_strings(v)) for role, v in table.items()}
            except ConfigError as exc:
                raise ConfigError(f"[access.roles]: {exc}") from None
        elif section in ("limits.default", "limits.max"):
            name = "default_limits" if section == "limits.default" else "max_limits"
            values[name] = _limits(table, f"[{section}]")
        for key, value in table.items():
            if section in ("access.roles", "limits.default", "limits.max"):
                continue
            if (section, key) not in _SCALARS:
                raise ConfigError(f"unknown key {key!r} in [{section}]")
            name, read = _SCALARS[section, key]
            try:
                values[name] = read(value)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"[{section}] {key}: {exc}") from None
    return values


def _flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """{"jobs": {"grace": 5, "retention": {...}}} -> {"jobs": {...}, "jobs.retention": {...}}"""
    flat: dict[str, dict[str, Any]] = {prefix: {}} if prefix else {}
    for key, value in document.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        elif prefix:
            flat[prefix][key] = value
        else:
            raise ConfigError(f"{key!r} must be inside a section, e.g. [server] or [jobs]")
    return flat


def parse_limits(assignments: Mapping[str, Any], where: str) -> Limits:
    """Limits from ``{"memory": "256M", ...}`` (LIMIT_FIELDS names); ConfigError if wrong."""
    return _limits(assignments, where)


def _limits(table: Mapping[str, Any], where: str) -> Limits:
    given: dict[str, Any] = {}
    for key, value in table.items():
        if key not in LIMIT_FIELDS:
            known = ", ".join(LIMIT_FIELDS)
            raise ConfigError(f"unknown limit {key!r} in {where} (known: {known})")
        name, read = LIMIT_FIELDS[key]
        try:
            given[name] = read(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where} {key}: {exc}") from None
    try:
        return Limits(**given)
    except InvalidSpec as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"must be a list of strings, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be {what}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be {what}, got {value!r}") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"must be {what} (>= 0), got {value!r}")
    return number


# ---- back to TOML -----------------------------------------------------------------------------


def render(config: ServerConfig) -> str:
    """The configuration as a TOML file ``load`` reads back to the same values."""
    lines = [
        "# jobmgr-server's effective configuration: built-in defaults, overridden by the",
        "# --config file, overridden by flags. Sizes are powers of 1024 (M = MiB).",
        "",
        "[server]",
        _pair("host", config.host),
        _pair("port", config.port),
        _pair("ca", config.ca),
        _pair("cert", config.cert),
        _pair("key", config.key),
        _pair("log_format", config.log_format),
        "",
        "[jobs]",
        _pair("state_dir", config.state_dir),
        _pair("cgroup_parent", config.cgroup_parent),
        _pair("grace", format_duration(config.grace)),
        _optional("max_running", config.max_running, "no cap on running jobs"),
        _pair("output_cap", format_size(config.output_cap)),
        _pair("run_as", config.run_as),
        _pair("allowed_run_as", list(config.allowed_run_as)),
        "",
        "[jobs.retention]",
        _optional("count", config.retain_count, "no cap on kept jobs"),
        _optional(
            "max_age",
            None if config.retain_age is None else format_duration(config.retain_age),
            "finished jobs kept however old",
        ),
        "",
        "[limits.default]  # 0 = unlimited",
        *_limit_lines(config.default_limits),
        "",
        "[limits.max]  # a job may not ask for more; unset = no maximum",
        *_limit_lines(config.max_limits or Limits()),
        "",
        "[access]",
        _pair("user_sees", config.user_sees),
        "",
        "[access.roles]",
        *(_pair(role, list(names)) for role, names in config.roles.items()),
        "",
        "[connections]",
        _optional("max_connections", config.max_connections, _DERIVED),
        _optional("connections_per_peer", config.connections_per_peer, _DERIVED),
        _pair("handshake_timeout", format_duration(config.handshake_timeout)),
        _pair("idle_timeout", format_duration(config.idle_timeout)),
        _pair("streams_per_connection", config.streams_per_connection),
        _optional("streams_per_caller", config.streams_per_caller, _DERIVED),
        _optional("rpcs_in_flight", config.rpcs_in_flight, _DERIVED),
    ]
    return "\n".join(lines) + "\n"


def _limit_lines(limits: Limits) -> list[str]:
    lines = []
    for key, (name, _) in LIMIT_FIELDS.items():
        value = getattr(limits, name)
        if value is None:
            lines.append(f"# {key}: unset")
        elif key in ("memory", "io_read", "io_write"):
            lines.append(_pair(key, format_size(value)))
        else:
            lines.append(_pair(key, value))
    return lines


def _optional(key: str, value: Any, meaning: str) -> str:
    return f"# {key}: unset ({meaning})" if value is None else _pair(key, value)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _pair(key: str, value: Any) -> str:
    shown_key = key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
    return f"{shown_key} = {_value(value)}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    # A JSON string is a valid TOML basic string (the same escapes).
    return json.dumps(str(value), ensure_ascii=False)
