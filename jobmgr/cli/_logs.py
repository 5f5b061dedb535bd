"""jobmgr-server's log lines on stderr, as text for people or JSON for log collectors.

Records may carry structured fields in ``record.fields`` (the per-RPC line does, see
jobmgr.api's call log); both formats render them as key/value pairs.

Every record is exactly one line, whatever it holds. Callers choose much of what is logged (a
job id, a certificate's CN, a TLS server name) and could otherwise write a newline and forge
the next line, or an escape sequence for the operator's terminal. So in the text format a
value with anything but plain printable characters is written as a quoted string with
backslash escapes (``\\n``, ``\\r``, ``\\t``, ``\\xNN`` for other control characters,
``\\uNNNN`` for the Unicode line separators), and the message is escaped the same way without
quotes; a traceback becomes an ``exception`` field. JSON escapes control characters itself;
DEL, the C1 controls and the Unicode line separators are escaped here too.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any, TextIO

# What a value may not hold bare: space, quote, '=' and backslash would make the line
# ambiguous to split; the rest are control characters (C0, DEL, C1) and line separators.
_NEEDS_QUOTES = re.compile('[\x00-\x20"=\\\\\x7f-\x9f\u2028\u2029]')
_UNSAFE = re.compile("[\x00-\x1f\\\\\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}
# What json.dumps leaves raw but a terminal or a line splitter would act on.
_JSON_EXTRA = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x2028, 0x2029)}


class TextFormatter(logging.Formatter):
    """``2025-01-01T12:00:00.123Z info rpc method=/job.JobManager/Start caller=... code=OK``"""

    def format(self, record: logging.LogRecord) -> str:
        words = [_when(record), record.levelname.lower(), escape(record.getMessage())]
        fields = _fields(record)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        words += [f"{escape(str(key))}={text_value(value)}" for key, value in fields.items()]
        return " ".join(words)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _when(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str).translate(_JSON_EXTRA)


def configure(log_format: str, stream: TextIO) -> None:
    """Send jobmgr's log records (INFO and up) to ``stream`` in ``log_format`` (text or
    json)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger = logging.getLogger("jobmgr")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # A record that cannot be written is dropped, not reported on stderr (which may be the
    # pipe this very handler drains: see _corelog).
    logging.raiseExceptions = False


def escape(text: str) -> str:
    """``text`` with every control character and backslash escaped: one printable line."""
    return _UNSAFE.sub(_escaped, text)


def text_value(value: Any) -> str:
    """A field's value as the text format writes it: bare if plain, else quoted, escaped."""
    text = "-" if value in ("", None) else str(value)
    if not _NEEDS_QUOTES.search(text):
        return text
    return '"' + _NEEDS_QUOTES.sub(_quoted, text) + '"'


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _quoted(match: re.Match[str]) -> str:
    return match.group() if match.group() in " =" else _escaped(match)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _when(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
