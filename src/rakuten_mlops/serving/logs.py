"""Structured JSON logs: one object per line, with the request id of the current request.

Titles are truncated and image bytes never reach a log line (the service only logs sizes
and hashes). Logs go to stdout and, when `RAKUTEN_LOG_FILE` is set, to a rotating file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler
from pathlib import Path
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
_HANDLER_TAG = "_rakuten_service_handler"
_FORMATTED = "_rakuten_json_line"
# LogRecord attributes that are not user-supplied `extra` fields.
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "request_id",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        # Every output (stdout, the file and its rollover check) formats the same record:
        # the line is built once.
        cached: str | None = record.__dict__.get(_FORMATTED)
        if cached is None:
            cached = record.__dict__[_FORMATTED] = self._format(record)
        return cached

    def _format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value if not isinstance(value, bytes) else f"<{len(value)} bytes>"
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def truncate(text: str | None, limit: int) -> str:
    """`text` cut to `limit` characters (with an ellipsis) for logs."""
    if not text:
        return ""
    return text if len(text) <= limit else text[:limit] + "…"


class _RequestIdFilter(logging.Filter):
    """Stamps the current request id on the record (it is formatted in another thread)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class _InProcessQueueHandler(QueueHandler):
    """Puts the record itself on the queue: the listener thread formats it (the base class
    formats and copies it on the caller's thread, for queues that cross processes)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _Listener(QueueListener):
    """A queue listener whose thread is stopped at shutdown (every line written)."""


_listener: _Listener | None = None


def configure_service_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    """JSON logs on stdout (and a rotating file) for the service; replaces earlier ones.

    Requests only put records on a queue; a listener thread formats and writes them, so
    slow disks or pipes never hold the event loop.
    """
    global _listener
    stop_service_logging()
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Ours from an earlier app, or the CLI's plain stderr handler (not pytest's capture).
        if getattr(handler, _HANDLER_TAG, False) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
            handler.close()
    formatter = JsonFormatter()
    outputs: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        outputs.append(
            RotatingFileHandler(log_file, maxBytes=20 * 1024**2, backupCount=5, encoding="utf-8")
        )
    for handler in outputs:
        handler.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = _InProcessQueueHandler(records)
    queue_handler.addFilter(_RequestIdFilter())
    setattr(queue_handler, _HANDLER_TAG, True)
    root.addHandler(queue_handler)
    _listener = _Listener(records, *outputs, respect_handler_level=True)
    _listener.start()
    root.setLevel(level.upper())
    # Our middleware logs every request once, with its request id: no second access log.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True


def stop_service_logging() -> None:
    """Write the queued log lines and stop the listener thread (at shutdown); later lines
    (the server's own last words) are written directly by the same outputs."""
    global _listener
    listener, _listener = _listener, None  # stopped once, even if a flush below fails
    if listener is None:
        return
    listener.stop()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, QueueHandler) and getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
    for handler in listener.handlers:
        with contextlib.suppress(ValueError, OSError):  # an output closed already (stdout)
            handler.flush()
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)
