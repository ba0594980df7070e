"""Structured logging: one line per event, ``key=value`` pairs, secrets redacted.

Call sites log ``"event=name key=value ..."``; ``setup_logging`` adds the time, level
and process, and ``register_secret`` makes a value disappear from every later line,
in every form it is commonly written in (raw, repr, JSON, URL-encoded). Warnings of
one kind are rate limited, so a flood of hostile input cannot wash the log away.

The console has one format, the same as the engine's own lines (``engine.console``):
``HH:MM:SS`` then, for warnings and errors, the level, then the text. Its level is
``MAOTRADE_CONSOLE_LEVEL`` (set by ``maotrade start -v``/``-q`` for every process it
starts; warnings by default); the log file keeps its own level and the full format. A
record logged with ``extra={"file_only": True}`` (a traceback) goes to the file only.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import urllib.parse
from typing import Any, Optional

import msgspec

from maotrade.protocol import as_dict
from maotrade.protocol.base import Message
from maotrade.protocol.from_worker import Heartbeat, MarketData, MarketDataBlock

CONSOLE_LEVEL_ENV = "MAOTRADE_CONSOLE_LEVEL"
REDACTED = "***"
# A secret shorter than this cannot be told apart from ordinary text; the registry
# refuses such secrets at registration instead (engine/admin/store.py).
MIN_SECRET_LENGTH = 3
_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()  # longest first, so a secret that contains another goes whole
_pattern: Optional[re.Pattern] = None  # every form, as one alternation: one C search per string
_secret_bytes: tuple[bytes, ...] = ()
# The same forms by account: what one account's worker reports can only hold its own secrets.
_by_scope: dict[str, re.Pattern] = {}
_scope_forms: dict[str, set[str]] = {}
_lock = threading.Lock()


def encoded_forms(value: str) -> set[str]:
    """The ways ``value`` shows up in text: raw, inside a repr, JSON (both escapings), URL-encoded."""
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value), urllib.parse.quote(value)}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def register_secret(value: Any, scope: Optional[str] = None) -> None:
    """Never let ``value`` (in any of its ``encoded_forms``) appear in a log line or message;
    ``scope`` (an account id) also files it under that account for ``redact_reports``."""
    global _secret_bytes, _ordered, _pattern
    if value is None or isinstance(value, bool):
        return
    value = str(value)
    if len(value) < MIN_SECRET_LENGTH:
        return
    forms = encoded_forms(value)
    with _lock:
        _secrets.update(forms)
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))
        _secret_bytes = tuple(s.encode() for s in _ordered)
        _pattern = _alternation(_ordered)
        if scope is not None:
            _scope_forms.setdefault(scope, set()).update(forms)
            _by_scope[scope] = _alternation(_scope_forms[scope])


def _alternation(forms) -> re.Pattern:
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


def has_secrets() -> bool:
    """True once any secret is registered."""
    return bool(_secret_bytes)


def mentions_secret(data: bytes) -> bool:
    """True if ``data`` (an encoded frame, UTF-8 text) holds any registered secret form."""
    return any(secret in data for secret in _secret_bytes)


def redact_text(text: str, forms: Optional[re.Pattern] = None) -> str:
    """Return ``text`` with every registered secret (or each match of ``forms``) replaced by ``***``."""
    pattern = _pattern if forms is None else forms
    if pattern is None:
        return text
    return pattern.sub(REDACTED, text)


def redact_value(value: Any, depth: int = 0, forms: Optional[re.Pattern] = None) -> Any:
    """Return ``value`` with every string (keys and values, at any depth) passed through ``redact_text``."""
    if isinstance(value, str):
        return redact_text(value, forms)
    if isinstance(value, msgspec.Struct):
        value = as_dict(value)  # a typed message: redact its wire form
    if depth > 64:
        return REDACTED  # deeper than any message we make: nothing worth keeping
    if isinstance(value, dict):
        return {redact_value(k, depth + 1, forms): redact_value(v, depth + 1, forms) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, depth + 1, forms) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"), forms).encode() if mentions_secret(value) else value
    return value


def redact_messages(messages: list, skip_types: frozenset = frozenset(), by_account: bool = False) -> list:
    """Return ``messages`` with every string in them redacted (those of a type in
    ``skip_types`` pass as they are). ``by_account``: use only the secrets filed under each
    message's ``account`` (plus those filed under none), which keeps an engine of many
    accounts fast."""
    if not _ordered:
        return messages
    out = []
    for m in messages:
        if isinstance(m, Message):
            if m.TYPE in skip_types:
                out.append(m)
                continue
            m = as_dict(m)
        if isinstance(m, dict) and m.get("type") in skip_types:
            out.append(m)
        elif by_account and isinstance(m, dict) and str(m.get("account")) in _by_scope:
            out.append(redact_value(m, forms=_by_scope[str(m.get("account"))]))
        else:
            out.append(redact_value(m))
    return out


# Bars (one or a block) and heartbeats carry numbers, the account id and instrument codes
# only, and are the hot path: redacting them would cost more than all the rest together.
UNREDACTED_TYPES = frozenset({MarketData.TYPE, MarketDataBlock.TYPE, Heartbeat.TYPE})


def redact_reports(messages: list) -> list:
    """``redact_messages`` for what a worker reports: every message but bars and heartbeats."""
    return redact_messages(messages, UNREDACTED_TYPES)


def redact_account_reports(messages: list) -> list:
    """``redact_reports`` with each account's own secrets (the engine's side of the boundary)."""
    return redact_messages(messages, UNREDACTED_TYPES, by_account=True)


class RedactingFormatter(logging.Formatter):
    """Formatter that replaces every registered secret with ``***``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record)).replace("\n", " | ")


class WarningRateLimit(logging.Filter):
    """Let through at most ``burst`` warnings of one kind (same call site and template) per
    ``period`` seconds; the next one let through says how many were suppressed."""

    def __init__(self, burst: int = 20, period: float = 10.0):
        super().__init__()
        self.burst, self.period = burst, period
        self._windows: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.levelno >= logging.CRITICAL:
            return True
        key = (record.name, record.msg if isinstance(record.msg, str) else type(record.msg).__name__)
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.period:
                suppressed = window[2] if window else 0
                window = self._windows[key] = [now, 0, 0]
                if suppressed:
                    record.msg = f"{record.msg} suppressed_similar={suppressed}"
            window[1] += 1
            if window[1] > self.burst:
                window[2] += 1
                return False
        return True


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
        handler.addFilter(WarningRateLimit())
        root.addHandler(handler)
        console.setLevel(console_level())
        numeric = min(numeric, console.level)
    else:
        console = logging.StreamHandler(stream or sys.stderr)
        console.setFormatter(RedactingFormatter(FORMAT))
    console.addFilter(WarningRateLimit())
    root.addHandler(console)
    root.setLevel(numeric)
    # Third-party libraries speak in their own voice; keep them to warnings.
    for noisy in ("urllib3", "uvicorn.access", "asyncio", "ib_insync", "lightstreamer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
