"""Where the server is and which files prove who we are: flags, contexts, the environment.

Each setting comes from the first of these that gives it:

1. its own flag (``--host``, ``--port``, ``--ca``, ``--cert``, ``--key``);
2. the context ``--context NAME`` names;
3. the environment: ``JOBMGR_ADDR`` (``HOST[:PORT]``), ``JOBMGR_CA``, ``JOBMGR_CERT``,
   ``JOBMGR_KEY``;
4. the context ``JOBMGR_CONTEXT`` names, else the config file's ``current`` one;
5. the fallback: ``localhost:31234`` and ``./certs/ca.pem``, ``./certs/client_admin.pem``,
   ``./certs/client_admin.key`` (relative to the working directory).

The certificate and its key are one setting: they come from the same place, and a place that
gives one without the other is an error, never paired with a key from elsewhere. The config
file is ``$XDG_CONFIG_HOME/jobmgr/config.toml`` (``~/.config/jobmgr/config.toml``)::

    current = "prod"
    [contexts.prod]
    address = "jobs1.example:31234"
    ca = "/etc/jobmgr/ca.pem"      # relative paths are relative to this file; ~ expands
    cert = "~/.jobmgr/me.pem"
    key = "~/.jobmgr/me.key"

Loads neither grpc nor protobuf: ``jobmgr-client context`` runs without them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ._errors import ConfigError

DEFAULT_PORT = 31234  # jobmgr.api.DEFAULT_PORT, without importing the API package
FALLBACK_DIR = "./certs"
ENV_CONTEXT = "JOBMGR_CONTEXT"
ENV_FILES = {"ca": "JOBMGR_CA", "cert": "JOBMGR_CERT", "key": "JOBMGR_KEY"}
ENV_ADDRESS = "JOBMGR_ADDR"


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
        base = environ.get("XDG_CONFIG_HOME") or os.path.join(
            environ.get("HOME") or os.path.expanduser("~"), ".config"
        )
        return Path(base) / "jobmgr" / "config.toml"

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
        known = ", ".join(sorted(self.contexts)) or "none"
        where = f"in {self.path}" if self.contexts else f"({self.path} holds none)"
        raise ConfigError(f"{why} names context {name!r}, which is not {where} (known: {known})")

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


def _path(text: str, base: Path | None) -> Path:
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


@dataclass(frozen=True)
class Settings:
    """Resolved: the server's address and our three files, and where each came from (for
    ``jobmgr-client context show`` and error messages)."""

    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    context: str | None  # the context that gave any of them
    sources: Mapping[str, str]  # "address", "ca", "cert" -> where it came from

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def resolve(
        cls,
        *,
        context: str | None = None,
        host: str | None = None,
        port: int | None = None,
        ca: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] = os.environ,
        config: Path | None = None,
    ) -> Settings:
        """Settings from flags (the keyword arguments), contexts, the environment and the
        fallback, in the order the module docstring gives. ConfigError if they are wrong."""
        layers = _Layers()
        layers.add("flag", _address_flags(host, port), ca, cert, key, ("--cert", "--key"))
        wanted = context or environ.get(ENV_CONTEXT)
        file = ContextFile.load(config or ContextFile.default_path(environ))
        if context:
            layers.add_context(file.get(context, "--context"))
        address = environ.get(ENV_ADDRESS)
        layers.add(
            "environment",
            _parse_address(address, ENV_ADDRESS) if address else None,
            environ.get(ENV_FILES["ca"]) or None,
            environ.get(ENV_FILES["cert"]) or None,
            environ.get(ENV_FILES["key"]) or None,
            (ENV_FILES["cert"], ENV_FILES["key"]),
        )
        if not context and wanted:
            layers.add_context(file.get(wanted, ENV_CONTEXT))
        elif not context and file.current:
            layers.add_context(file.get(file.current, f"{file.path}'s current"))
        layers.add(
            "default",
            ("localhost", DEFAULT_PORT),
            f"{FALLBACK_DIR}/ca.pem",
            f"{FALLBACK_DIR}/client_admin.pem",
            f"{FALLBACK_DIR}/client_admin.key",
            ("", ""),
        )
        return layers.settings()


Address = tuple[str | None, int | None]


def _address_flags(host: str | None, port: int | None) -> Address | None:
    if host is None and port is None:
        return None
    parsed_host, parsed_port = _parse_address(host, "--host") if host else (None, None)
    return parsed_host, port if port is not None else parsed_port


def _parse_address(text: str, what: str) -> Address:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT``, ``[V6]`` or a bare IPv6 address."""
    host, port = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"{what} {text!r}: write HOST:PORT or [IPV6]:PORT")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise ConfigError(f"{what} {text!r} names no host")
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


class _Layers:
    """The places settings come from, first to last; each setting from the first that has it."""

    def __init__(self) -> None:
        self._host: tuple[str, str] | None = None
        self._port: tuple[int, str] | None = None
        self._ca: tuple[Path, str] | None = None
        self._pair: tuple[Path, Path, str] | None = None

    def add_context(self, context: Context) -> None:
        where = f"context {context.name}"
        address = _parse_address(context.address, f"{where}'s address") if context.address else None
        self.add(where, address, context.ca, context.cert, context.key, ("cert", "key"))

    def add(
        self,
        where: str,
        address: Address | None,
        ca: str | os.PathLike[str] | None,
        cert: str | os.PathLike[str] | None,
        key: str | os.PathLike[str] | None,
        names: tuple[str, str],
    ) -> None:
        if address is not None:
            host, port = address
            if host is not None and self._host is None:
                self._host = host, where
            if port is not None and self._port is None:
                self._port = port, where
        if ca is not None and self._ca is None:
            self._ca = _path(os.fspath(ca), None), where
        if (cert is None) != (key is None):
            given, missing = names if cert is not None else reversed(names)
            raise ConfigError(
                f"{given} is set ({where}) but {missing} is not: give both, a certificate and "
                "its own private key"
            )
        if cert is not None and key is not None and self._pair is None:
            self._pair = _path(os.fspath(cert), None), _path(os.fspath(key), None), where

    def settings(self) -> Settings:
        assert self._host and self._port and self._ca and self._pair  # the fallback has all
        context = next(
            (w.removeprefix("context ") for w in self._wheres() if w.startswith("context ")),
            None,
        )
        return Settings(
            host=self._host[0],
            port=self._port[0],
            ca=self._ca[0],
            cert=self._pair[0],
            key=self._pair[1],
            context=context,
            sources={
                "host": self._host[1],
                "port": self._port[1],
                "ca": self._ca[1],
                "cert": self._pair[2],
            },
        )

    def _wheres(self) -> list[str]:
        assert self._host and self._port and self._ca and self._pair
        return [self._host[1], self._port[1], self._ca[1], self._pair[2]]
