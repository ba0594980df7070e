"""Structured logging: one line per event, ``key=value`` pairs, secrets redacted.

Call sites log ``"event=name key=value ..."``; ``setup_logging`` adds the time, level
and process, and ``register_secret`` makes a value disappear from every later line.

The console has one format, the same as the engine's own lines (``engine.console``):
``HH:MM:SS`` then, for warnings and errors, the level, then the text. Its level is
``MAOTRADE_CONSOLE_LEVEL`` (set by ``maotrade start -v``/``-q`` for every process it
starts; warnings by default); the log file keeps its own level and the full format. A
record logged with ``extra={"file_only": True}`` (a traceback) goes to the file only.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Optional

CONSOLE_LEVEL_ENV = "MAOTRADE_CONSOLE_LEVEL"

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Never let ``value`` appear in a log line from now on."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact_text(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFormatter(logging.Formatter):
    """Formatter that replaces every registered secret with ``***``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record)).replace("\n", " | ")


FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s"


def console_prefix(level: int = logging.INFO) -> str:
    """The start of every console line: the time, and the level if it is a warning or worse."""
    stamp = time.strftime("%H:%M:%S")
    return f"{stamp} {logging.getLevelName(level)}" if level >= logging.WARNING else stamp


class ConsoleFormatter(RedactingFormatter):
    """``HH:MM:SS [LEVEL] message`` (no ``event=``), the look of ``engine.console``'s lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if text.startswith("event="):
            text = text[len("event="):]
        return f"{console_prefix(record.levelno)} {text}"


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


def console_level(default: int = logging.WARNING) -> int:
    """The console's level: ``MAOTRADE_CONSOLE_LEVEL`` if set, else ``default``."""
    name = os.environ.get(CONSOLE_LEVEL_ENV, "")
    return getattr(logging, name.upper(), default) if name else default


def console_handler(stream=None) -> logging.Handler:
    """A handler writing the console format to ``stream`` (stderr), file-only records dropped."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(ConsoleFormatter("%(message)s"))
    handler.addFilter(_not_file_only)
    return handler


def setup_logging(level: str = "INFO", stream=None, log_file: Optional[str] = None) -> None:
    """Send MAOTrade's logs one line per event: to ``log_file`` at ``level`` with only
    warnings on stderr, or, without a file, everything at ``level`` to ``stream``."""
    numeric = getattr(logging, str(level).upper(), logging.INFO)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    if log_file:
        console = console_handler(stream)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(RedactingFormatter(FORMAT))
        handler.setLevel(numeric)
        root.addHandler(handler)
        console.setLevel(console_level())
        numeric = min(numeric, console.level)
    else:
        console = logging.StreamHandler(stream or sys.stderr)
        console.setFormatter(RedactingFormatter(FORMAT))
    root.addHandler(console)
    root.setLevel(numeric)
    # Third-party libraries speak in their own voice; keep them to warnings.
    for noisy in ("urllib3", "uvicorn.access", "asyncio", "ib_insync", "lightstreamer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
