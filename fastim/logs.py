"""Process-wide logging: one line per event, as text for people or JSON for collectors."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, TextIO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; anything else came from ``extra=`` and is
# emitted as a field of the JSON object.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    """``2026-11-23 15:57:00,123 INFO fastim.cli: message``.

    Newlines (in messages and tracebacks) are written as ``\\n`` so that a
    client-supplied string cannot forge a log line and every line is one event.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, msg, exc, and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exc"] = record.exc_text
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES and name not in event:
                event[name] = value
        return json.dumps(event, ensure_ascii=False, default=str)


FORMATTERS = {"text": TextFormatter, "json": JsonFormatter}

# Loggers whose warnings a client can cause one connection at a time (a malformed request, a socket
# that stops reading): their lines are cut short and rationed, so that what a client makes the
# node write stays bounded. Errors (bugs of ours) always pass.
CLIENT_DRIVEN_LOGGERS = ("tornado.general", "fastim.interfaces.ws.")
CLIENT_LINES_PER_INTERVAL = 50
CLIENT_LINES_INTERVAL_S = 10.0
CLIENT_LINE_MAX_CHARS = 500


class ClientDrivenLines(logging.Filter):
    """At most ``per_interval`` such lines per interval pass; the next one that passes says how many did not."""

    def __init__(
        self,
        prefixes: tuple[str, ...] = CLIENT_DRIVEN_LOGGERS,
        per_interval: int = CLIENT_LINES_PER_INTERVAL,
        interval_s: float = CLIENT_LINES_INTERVAL_S,
        max_chars: int = CLIENT_LINE_MAX_CHARS,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._per_interval = per_interval
        self._interval_s = interval_s
        self._max_chars = max_chars
        self._window_start = float("-inf")
        self._passed = 0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or not record.name.startswith(self._prefixes):
            return True
        now = time.monotonic()
        if now - self._window_start >= self._interval_s:
            self._window_start, self._passed = now, 0
        if self._passed >= self._per_interval:
            self._dropped += 1
            return False
        self._passed += 1
        message = record.getMessage()
        if len(message) > self._max_chars:
            message = message[: self._max_chars] + "..."
        if self._dropped:
            message += f" ({self._dropped} more such lines were not logged)"
            self._dropped = 0
        record.msg, record.args = message, None
        return True


def configure_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Send every logger, Tornado's access log included, to one handler on ``stream`` (stderr).

    Calling it again replaces the handler instead of adding a second one.
    """
    if fmt not in FORMATTERS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {sorted(FORMATTERS)}")
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {sorted(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(FORMATTERS[fmt]())
    handler.addFilter(ClientDrivenLines())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # Tornado's loggers (tornado.access, tornado.application, tornado.general)
    # must reach the root handler rather than one of their own.
    for name in ("tornado", "tornado.access", "tornado.application", "tornado.general"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    logging.captureWarnings(True)
