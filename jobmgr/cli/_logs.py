"""jobmgr-server's log lines on stderr, as text for people or JSON for log collectors.

Records may carry structured fields in ``record.fields`` (the per-RPC line does, see
jobmgr.api's call log); both formats render them as key/value pairs.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any


class TextFormatter(logging.Formatter):
    """``2025-01-01T12:00:00.123Z info rpc method=/job.JobManager/Start caller=... code=OK``"""

    def format(self, record: logging.LogRecord) -> str:
        words = [_when(record), record.levelname.lower(), record.getMessage()]
        words += [f"{key}={_text_value(value)}" for key, value in _fields(record).items()]
        line = " ".join(words)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


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
        return json.dumps(entry, ensure_ascii=False)


def configure(log_format: str) -> None:
    """Send jobmgr's log records (INFO and up) to stderr in ``log_format`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger = logging.getLogger("jobmgr")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _when(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_value(value: Any) -> str:
    text = "-" if value in ("", None) else str(value)
    # Quoted when a space or quote would make the line ambiguous to split.
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ' "=') else text
