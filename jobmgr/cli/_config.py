"""jobmgr-server's configuration: built-in defaults, then a TOML file, then flags, each
overriding the one before. ``load`` reads the file and ``render`` writes the effective result
back as one, both by the table of settings in ``_settings`` (docs/jobmgr.example.toml explains
every key). Unknown sections and keys are errors: a misspelt limit must not be silently
ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobmgr.api import DEFAULT_PORT, DEFAULT_ROLES, ConnectionLimits, role_policy
from jobmgr.worker import DEFAULT_LIMITS, InvalidSpec, Limits, Retention, Sandbox

from ._setting import PartError, Setting
from ._settings import SETTINGS

GiB = 1024**3
ANY_USER = "*"


class ConfigError(ValueError):
    """The configuration is not usable; the message names the key and what is wrong."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything jobmgr-server can be told, one field per row of SETTINGS; each default here
    is the setting's default. None means unset (``Setting.unset`` says what that means)."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    ca: str = "./certs/ca.pem"
    cert: str = "./certs/server.pem"
    key: str = "./certs/server.key"
    crl: str | None = None
    log_format: str = "text"
    state_dir: str = "/var/lib/jobmgr"
    cgroup_parent: str = "jobmgr"
    grace: float = 5.0
    max_running: int | None = None
    output_cap: int = GiB
    run_as: str | None = None
    allowed_run_as: tuple[str, ...] = ("nobody",)
    retention: Retention = field(default_factory=Retention)
    default_limits: Limits = DEFAULT_LIMITS
    max_limits: Limits = field(default_factory=Limits)  # every limit unset: no maximum
    uid_range: tuple[int, int] = Sandbox().uid_range
    hidden_paths: tuple[str, ...] = Sandbox().hidden_paths
    visible_paths: tuple[str, ...] | None = None
    mount_sources: tuple[str, ...] | None = None
    rootfs_dirs: tuple[str, ...] | None = None
    user_namespaces: str = "deny"
    user_sees: str = "all"
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    # Connection limits; None: derived from the file descriptor limit at start.
    max_connections: int | None = None
    connections_per_peer: int | None = None
    handshake_timeout: float = ConnectionLimits.handshake_timeout
    idle_timeout: float = ConnectionLimits.idle_timeout
    streams_per_connection: int = ConnectionLimits.streams_per_connection
    streams_per_caller: int | None = None
    rpcs_in_flight: int | None = None

    @property
    def any_user_allowed(self) -> bool:
        return ANY_USER in self.allowed_run_as

    def sandbox(self) -> Sandbox:
        """The jobs' sandbox: hidden_paths and the directories of the server's certificates
        and key, less visible_paths; ValueError if a setting is not usable."""
        hide = (*self.hidden_paths, *tls_hidden(self))
        shown = {p.rstrip("/") or "/" for p in self.visible_paths or ()}
        return Sandbox(
            uid_range=self.uid_range,
            hidden_paths=tuple(p for p in dict.fromkeys(hide) if p.rstrip("/") not in shown),
            mount_sources=self.mount_sources or (),
            rootfs_dirs=self.rootfs_dirs or (),
            user_namespaces=self.user_namespaces == "allow",
        )

    def with_changes(self, changes: Mapping[str, Any]) -> ServerConfig:
        """This configuration with ``changes`` (field -> value) applied, each by its setting's
        ``merge`` (limits limit by limit, roles role by role) or replacing the value."""
        merged = dict(changes)
        for name, given in changes.items():
            merge = _BY_FIELD[name].merge
            if merge is not None:
                merged[name] = merge(given, getattr(self, name))
        return dataclasses.replace(self, **merged)

    def connection_limits(self, fds: int) -> ConnectionLimits:
        """The connection limits set here, the others derived for ``fds`` file descriptors;
        ValueError names one that is not a positive number."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(ConnectionLimits)}
        return ConnectionLimits.for_fd_limit(fds, **given)

    def check(self) -> None:
        """Raise ConfigError unless the values make sense together."""
        problems = [
            f"{row.key} must be {' or '.join(row.choices)}, got {value!r}"
            for row in SETTINGS
            if row.choices and (value := getattr(self, row.field)) not in (None, *row.choices)
        ]
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be between 0 and 65535, got {self.port}")
        if self.max_running is not None and self.max_running < 1:
            problems.append(f"max_running must be >= 1, got {self.max_running}")
        if self.output_cap < 1:
            problems.append(f"output_cap must be at least 1 byte, got {self.output_cap}")
        if (
            self.run_as is not None
            and not self.any_user_allowed
            and self.run_as not in self.allowed_run_as
        ):
            problems.append(
                f"run_as {self.run_as!r} is not in allowed_run_as "
                f"{list(self.allowed_run_as)}: jobs could not run at all"
            )
        try:
            self.default_limits.check_within(self.max_limits)
        except InvalidSpec as exc:
            problems.append(f"default limits above the maxima: {exc}")
        try:
            self.default_limits.check_disk_fits()
        except InvalidSpec as exc:
            problems.append(f"default limits: {exc}")
        try:
            self.sandbox()
        except ValueError as exc:
            problems.append(str(exc))
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


def tls_hidden(config: ServerConfig) -> tuple[str, ...]:
    """What hides the server's TLS files from jobs: the directory of each (its key's, its CA's:
    where jobmgr-certs also keeps the CA's key), or the file itself when that directory is a
    top-level one such as /etc, which jobs need."""
    hidden = []
    for name in ("ca", "cert", "key", "crl"):
        path = getattr(config, name)
        if path is None:
            continue
        real = os.path.realpath(path)
        parent = os.path.dirname(real)
        hidden.append(parent if parent.count("/") >= 2 else real)
    return tuple(dict.fromkeys(hidden))


_BY_FIELD = {row.field: row for row in SETTINGS}
_BY_PLACE = {(row.section, row.key): row for row in SETTINGS}
_SECTIONS = {row.section for row in SETTINGS}

# ---- from TOML --------------------------------------------------------------------------------


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
        return from_document(document)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None


def from_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a parsed TOML document makes, as ServerConfig field -> value."""
    values: dict[str, Any] = {}
    for row, value in _settings_in(document, ()):
        try:
            values[row.field] = row.parse(value)
        except PartError as exc:
            raise ConfigError(exc.at(f"[{row.section}.{row.key}]")) from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"[{row.section}] {row.key}: {exc}") from None
    return values


def _settings_in(table: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[tuple[Setting, Any]]:
    """Every (setting, value) in ``table`` (at ``path``); ConfigError for anything else."""
    section = ".".join(path)
    for key, value in table.items():
        row = _BY_PLACE.get((section, key))
        if row is not None:
            yield row, value
        elif isinstance(value, dict):
            inner = f"{section}.{key}" if section else key
            if not any(s == inner or s.startswith(inner + ".") for s in _SECTIONS):
                raise ConfigError(f"unknown section [{inner}]")
            yield from _settings_in(value, (*path, key))
        elif section:
            raise ConfigError(f"unknown key {key!r} in [{section}]")
        else:
            raise ConfigError(f"{key!r} must be inside a section, e.g. [server] or [jobs]")


# ---- back to TOML -----------------------------------------------------------------------------


def render(config: ServerConfig) -> str:
    """The configuration as a TOML file ``load`` reads back to the same values."""
    tables: dict[str, list[str]] = {}
    for row in SETTINGS:
        value = getattr(config, row.field)
        rendered = None if value is None else row.render(value)
        if isinstance(rendered, dict):
            lines = tables.setdefault(f"{row.section}.{row.key}", [])
            lines += [_line(key, item, row.unset) for key, item in rendered.items()]
        else:
            tables.setdefault(row.section, []).append(_line(row.key, rendered, row.unset))
    header = [
        "# jobmgr-server's effective configuration: built-in defaults, overridden by the",
        "# --config file, overridden by flags. Sizes are powers of 1024 (M = MiB); a limit of",
        "# 0 is unlimited.",
    ]
    blocks = ["\n".join([f"[{name}]", *lines]) for name, lines in tables.items()]
    return "\n\n".join(["\n".join(header), *blocks]) + "\n"


def _line(key: str, value: Any, unset: str) -> str:
    if value is None:
        return f"# {key}: unset ({unset})" if unset else f"# {key}: unset"
    return f"{_key(key)} = {_value(value)}"


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    # A JSON string is a valid TOML basic string (the same escapes).
    return json.dumps(str(value), ensure_ascii=False)
