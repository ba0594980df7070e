"""Client-side rate limits of Kite Connect: a sliding one-second window per kind of call.

Kite answers HTTP 429 past its limits (orders about 10/s, historical 3/s, quotes 1/s,
everything else about 10/s); every call takes a slot here first. A call that would
wait longer than its budget fails with ``TemporaryError`` and is never sent late.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from maotrade.errors import TemporaryError

ORDERS = "orders"
HISTORICAL = "historical"
QUOTES = "quotes"
OTHER = "other"


class RateLimiter:
    """At most ``limits[kind]`` calls of each kind in any ``window`` seconds."""

    def __init__(self, limits: dict[str, float], window: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.limits = dict(limits)
        self.window = window
        self.clock = clock
        self.sleep = sleep
        self._calls: dict[str, deque] = {kind: deque() for kind in limits}
        self._lock = threading.Lock()

    def acquire(self, kind: str, budget: float) -> float:
        """Take a slot of ``kind``, waiting at most ``budget`` seconds; return the wait."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                calls = self._calls[kind]
                while calls and now - calls[0] >= self.window:
                    calls.popleft()
                if len(calls) < self.limits[kind]:
                    calls.append(now)
                    return waited
                delay = calls[0] + self.window - now
            if waited + delay > budget:
                raise TemporaryError(f"Kite {kind} rate limit ({self.limits[kind]:g}/s) reached; "
                                     f"next slot in {delay:.2f}s")
            self.sleep(delay)
            waited += delay
