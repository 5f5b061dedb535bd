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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import ConfigError

if TYPE_CHECKING:
    from ._contextfile import Context

DEFAULT_PORT = 31234  # jobmgr.api.DEFAULT_PORT, without importing the API package
FALLBACK_DIR = "./certs"
ENV_CONTEXT = "JOBMGR_CONTEXT"
ENV_FILES = {"ca": "JOBMGR_CA", "cert": "JOBMGR_CERT", "key": "JOBMGR_KEY"}
ENV_ADDRESS = "JOBMGR_ADDR"


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the config file is: $XDG_CONFIG_HOME/jobmgr/config.toml, ~/.config by default."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config"
    )
    return Path(base) / "jobmgr" / "config.toml"


def _path(text: str, base: Path | None) -> Path:
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


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
        path = config or config_path(environ)
        if not wanted and not path.exists():  # no contexts: their module is not even loaded
            return layers.without_contexts(environ)
        from ._contextfile import ContextFile

        file = ContextFile.load(path)
        if context:
            layers.add_context(file.get(context, "--context"))
        layers.add_environment(environ)
        if not context and wanted:
            layers.add_context(file.get(wanted, ENV_CONTEXT))
        elif not context and file.current:
            layers.add_context(file.get(file.current, f"{file.path}'s current"))
        return layers.with_default()


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

    def without_contexts(self, environ: Mapping[str, str]) -> Settings:
        self.add_environment(environ)
        return self.with_default()

    def add_environment(self, environ: Mapping[str, str]) -> None:
        address = environ.get(ENV_ADDRESS)
        self.add(
            "environment",
            _parse_address(address, ENV_ADDRESS) if address else None,
            environ.get(ENV_FILES["ca"]) or None,
            environ.get(ENV_FILES["cert"]) or None,
            environ.get(ENV_FILES["key"]) or None,
            (ENV_FILES["cert"], ENV_FILES["key"]),
        )

    def with_default(self) -> Settings:
        self.add(
            "default",
            ("localhost", DEFAULT_PORT),
            f"{FALLBACK_DIR}/ca.pem",
            f"{FALLBACK_DIR}/client_admin.pem",
            f"{FALLBACK_DIR}/client_admin.key",
            ("", ""),
        )
        return self.settings()

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
