"""What one row of jobmgr-server's settings table is, and the readers its rows use.

A ``Setting`` names where a value sits in the TOML file, the ServerConfig field it fills, how
it is read (the same ``parse`` for the file's value and the flag's text) and written back
(``render``; ``parse(render(value))`` gives the value again), and its flag and help. A setting
whose value is a table of its own (``[limits.max]``) reads it with a ``Record``: a small table
of ``Part``s, given in the file as keys and on the command line as ``NAME=VALUE,...``.

``parse`` raises ValueError saying what is wrong with the value; the caller says where it was
(``[jobs] grace: ...``, ``argument --grace: ...``). A Record raises ``PartError``, whose
``at(place)`` puts the place where the sentence needs it (``unknown limit 'x' in [limits.max]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One server setting. Its default is its ServerConfig field's default."""

    section: str
    """The file's table holding it: ``jobs`` is ``[jobs]``."""
    key: str
    """Its key in that table; a Record's is a table of its own, ``[section.key]``."""
    field: str
    """The ServerConfig field it fills."""
    parse: Callable[[Any], Any]
    """A value from the file, or a flag's text -> the field's value; ValueError if wrong."""
    render: Callable[[Any], Any]
    """The field's value (never None) -> a TOML value that ``parse`` reads back to it."""
    flag: str | None
    """Its command-line flag; None: the file only."""
    help: str
    """For --help: what it does. The default is added from the field."""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    """The only values allowed, checked in the file and on the command line."""
    unset: str = ""
    """What the field's None means (``no cap``), for --help and --print-config."""
    merge: Callable[[Any, Any], Any] | None = None
    """(value given, value before) -> the new value; None: the value given replaces it.
    A setting with ``merge`` takes its flag repeatedly, each laid over the one before."""
    collect: bool = False
    """The flag may repeat; its values together make the list (replacing the file's)."""

    def shown(self, value: Any) -> str:
        """``value`` as --help shows it: ``5s``, ``nobody``, ``cpu=1,memory=512M``."""
        if value is None:
            return self.unset
        rendered = self.render(value)
        if isinstance(rendered, dict):
            given = [f"{key}={_plain(item)}" for key, item in rendered.items() if item is not None]
            return ",".join(given) or self.unset
        return _plain(rendered)


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_plain(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---- settings that are tables of their own ----------------------------------------------------


class PartError(ValueError):
    """What is wrong with a table-valued setting, or with its part ``key``."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.key = key

    def at(self, where: str) -> str:
        """The message, placed: ``[limits.max] memory: ...``, ``--max-limit: ...``."""
        return f"{where} {self.key}: {self.problem}" if self.key else f"{where}: {self.problem}"


class UnknownPart(PartError):
    """A key the table does not have; ``noun`` is what its keys are called (``limit``)."""

    def __init__(self, noun: str, key: str, known: str) -> None:
        super().__init__(f"unknown {noun} {key!r}", key)
        self.known = known

    def at(self, where: str) -> str:
        return f"{self.problem} in {where} (known: {self.known})"


@dataclass(frozen=True)
class Part:
    """One key of a Record: ``memory`` of ``[limits.max]`` fills ``Limits.memory_bytes``."""

    key: str
    attribute: str
    parse: Callable[[Any], Any]
    render: Callable[[Any], Any] = lambda value: value


@dataclass(frozen=True)
class Record:
    """A table of Parts read into a frozen dataclass whose unset attributes are None."""

    make: Callable[..., Any]
    parts: tuple[Part, ...]
    noun: str = "key"
    """What a part is called in ``unknown <noun> 'x' in [...]``."""
    _by_key: Mapping[str, Part] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {part.key: part for part in self.parts})

    def parse(self, value: Any) -> Any:
        """A table, or ``NAME=VALUE,...`` text -> the record with the parts given set."""
        table = assignments(value) if isinstance(value, str) else value
        if not isinstance(table, Mapping):
            raise PartError(f"must be a table of {self._known()}, got {value!r}")
        given = {}
        for key, item in table.items():
            part = self._by_key.get(key)
            if part is None:
                raise UnknownPart(self.noun, key, self._known())
            try:
                given[part.attribute] = part.parse(item)
            except (ValueError, TypeError) as exc:
                raise PartError(str(exc), key) from None
        try:
            return self.make(**given)
        except ValueError as exc:
            raise PartError(str(exc)) from None

    def render(self, record: Any) -> dict[str, Any]:
        """key -> TOML value, None for a part unset."""
        values = {part.key: getattr(record, part.attribute) for part in self.parts}
        parts = self._by_key
        return {k: None if v is None else parts[k].render(v) for k, v in values.items()}

    def _known(self) -> str:
        return ", ".join(self._by_key)


def laid_over(given: Any, before: Any) -> Any:
    """The record ``before`` with every part ``given`` sets (not None) taken from ``given``."""
    changes = {f.name: getattr(given, f.name) for f in dataclasses.fields(given)}
    return dataclasses.replace(before, **{k: v for k, v in changes.items() if v is not None})


def assignments(text: str) -> dict[str, str]:
    """``"count=5, max_age=30d"`` -> ``{"count": "5", "max_age": "30d"}``."""
    pairs = [item.partition("=") for item in text.split(",") if item]
    if not pairs or any(not sep or not name for name, sep, _ in pairs):
        raise ValueError(f"{text!r}: write NAME=VALUE pairs separated by commas")
    return {name.strip(): value.strip() for name, _, value in pairs}


# ---- readers ----------------------------------------------------------------------------------


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"must be a list of strings, got {value!r}")
    return tuple(value)


def number(what: str) -> Callable[[Any], float]:
    """A reader of a finite number >= 0; ``what`` completes "must be ...", e.g. "a port"."""

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"must be {what}, got {value!r}")
        try:
            found = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be {what}, got {value!r}") from None
        if not 0 <= found < float("inf"):
            raise ValueError(f"must be {what} (>= 0), got {value!r}")
        return found

    return parse


def whole(what: str) -> Callable[[Any], int]:
    """A reader of a whole number >= 0 (``4000``, ``"4000"``; not ``4000.5``)."""
    read = number(what)

    def parse(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        found = read(value)
        if not found.is_integer():
            raise ValueError(f"must be {what}, got {value!r}")
        return int(found)

    return parse
