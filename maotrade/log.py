"""Structured logging: one line per event, ``key=value`` pairs, secrets redacted.

Call sites log ``"event=name key=value ..."``; ``setup_logging`` adds the time, level
and process, and ``register_secret`` makes a value disappear from every later line.
"""
from __future__ import annotations

import logging
import sys
import threading
from typing import Optional

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


def setup_logging(level: str = "INFO", stream=None, log_file: Optional[str] = None) -> None:
    """Send MAOTrade's logs one line per event: to ``log_file`` at ``level`` with only
    warnings on stderr, or, without a file, everything at ``level`` to ``stream``."""
    numeric = getattr(logging, str(level).upper(), logging.INFO)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    console = logging.StreamHandler(stream or sys.stderr)
    console.setFormatter(RedactingFormatter(FORMAT))
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(RedactingFormatter(FORMAT))
        root.addHandler(handler)
        console.setLevel(logging.WARNING)
    root.addHandler(console)
    root.setLevel(numeric)
    # Third-party libraries speak in their own voice; keep them to warnings.
    for noisy in ("urllib3", "uvicorn.access", "asyncio", "ib_insync", "lightstreamer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
