"""The client's config file: named contexts (a server and the files for it), and which one
is current. Loaded only when there is such a file (see _settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ._errors import ConfigError
from ._settings import _path, config_path


@dataclass(frozen=True)
class Context:
    """A named server in the config file: its address and our files for it."""

    name: str
    address: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


CONTEXT_KEYS = tuple(f.name for f in fields(Context) if f.name != "name")


@dataclass(frozen=True)
class ContextFile:
    """The config file as read: its contexts and which one is current."""

    path: Path
    current: str | None
    contexts: Mapping[str, Context]

    @classmethod
    def default_path(cls, environ: Mapping[str, str] = os.environ) -> Path:
        return config_path(environ)

    @classmethod
    def load(cls, path: Path) -> ContextFile:
        """The file at ``path``; an empty one if there is none. ConfigError if it is wrong."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(path, None, {})
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        import tomllib  # only once there is a file: its regular expressions cost 2 ms

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        unknown = set(data) - {"current", "contexts"}
        if unknown:
            raise ConfigError(
                f"{path}: unknown key {sorted(unknown)[0]!r} (known: current, [contexts.NAME])"
            )
        current = data.get("current")
        if current is not None and not isinstance(current, str):
            raise ConfigError(f"{path}: current must be a context's name, a string")
        tables = data.get("contexts", {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: contexts must be tables, [contexts.NAME]")
        contexts = {name: _context(path, name, table) for name, table in tables.items()}
        if current is not None and current not in contexts:
            raise ConfigError(f"{path}: current = {current!r} names no [contexts.{current}]")
        return cls(path, current, contexts)

    def get(self, name: str, why: str) -> Context:
        """The context ``name``, which ``why`` asked for; ConfigError if there is none."""
        if name in self.contexts:
            return self.contexts[name]
        if not self.contexts:
            holds = "holds no contexts" if self.path.exists() else "does not exist"
            raise ConfigError(f"{why} names context {name!r}, but {self.path} {holds}")
        known = ", ".join(sorted(self.contexts))
        raise ConfigError(f"{why} names context {name!r}, which {self.path} does not hold "
                          f"(it holds: {known})")  # fmt: skip

    def use(self, name: str) -> None:
        """Make ``name`` the current context: rewrites the file's top-level ``current``
        line, keeping the rest of it (comments included) as it is."""
        self.get(name, "context use")
        lines = self.path.read_text().splitlines(keepends=True)
        line = f"current = {_toml_string(name)}\n"
        for number, text in enumerate(lines):
            stripped = text.lstrip()
            if stripped.startswith("["):
                lines.insert(number, line)
                break
            if stripped.split("=", 1)[0].strip() == "current":
                lines[number] = line
                break
        else:
            lines.append(line)
        new = "".join(lines)
        if ContextFile._parse_current(new) != name:  # never leave a file we misread
            raise ConfigError(f"cannot set current in {self.path}: edit it by hand")
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(new)
        os.chmod(temporary, self.path.stat().st_mode & 0o777)
        os.replace(temporary, self.path)

    @staticmethod
    def _parse_current(text: str) -> object:
        import tomllib

        try:
            return tomllib.loads(text).get("current")
        except tomllib.TOMLDecodeError:
            return None


def _context(path: Path, name: str, table: object) -> Context:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: contexts.{name} must be a table, [contexts.{name}]")
    unknown = set(table) - set(CONTEXT_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {sorted(unknown)[0]!r} in [contexts.{name}] "
            f"(known: {', '.join(CONTEXT_KEYS)})"
        )
    for key, value in table.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: {key} in [contexts.{name}] must be a non-empty string")
    files = {key: _path(table[key], path.parent) for key in ("ca", "cert", "key") if key in table}
    return Context(name, address=table.get("address"), **files)


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'
