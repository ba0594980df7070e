"""Client-side rate limits of Kite Connect: a sliding one-second window per kind of call.

Kite answers HTTP 429 past its limits (orders about 10/s, historical 3/s, quotes 1/s,
everything else about 10/s), counted as requests arrive. A call takes a slot before it is
sent and the slot is dated again when its answer comes back: the request reached Kite
somewhere in between, so the window never lets more than the limit arrive in one second
however the network delays them. A call that would wait longer than its budget fails with
``TemporaryError`` and is never sent late.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

from maotrade.errors import TemporaryError

ORDERS = "orders"
HISTORICAL = "historical"
QUOTES = "quotes"
OTHER = "other"
_EPSILON = 1e-9  # a slot that is due "now" in floating point is free


class RateLimiter:
    """At most ``limits[kind]`` calls of each kind in any ``window`` seconds."""

    def __init__(self, limits: dict[str, float], window: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.limits = dict(limits)
        self.window = window
        self.clock = clock
        self.sleep = sleep
        self._slots: dict[str, list[list[float]]] = {kind: [] for kind in limits}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, kind: str, budget: float) -> Iterator[float]:
        """Hold a slot of ``kind`` for one call (waiting at most ``budget`` seconds); yield the wait."""
        stamp, waited = self._take(kind, budget)
        try:
            yield waited
        finally:
            with self._lock:
                stamp[0] = self.clock()

    def acquire(self, kind: str, budget: float) -> float:
        """Take a slot of ``kind`` dated now, waiting at most ``budget`` seconds; return the wait."""
        return self._take(kind, budget)[1]

    def _take(self, kind: str, budget: float) -> tuple[list[float], float]:
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                slots = self._slots[kind] = [s for s in self._slots[kind] if now - s[0] < self.window - _EPSILON]
                if len(slots) < self.limits[kind]:
                    stamp = [now]
                    slots.append(stamp)
                    return stamp, waited
                delay = min(s[0] for s in slots) + self.window - now
            if waited + delay > budget:
                raise TemporaryError(f"Kite {kind} rate limit ({self.limits[kind]:g}/s) reached; "
                                     f"next slot in {delay:.2f}s")
            self.sleep(delay)
            waited += delay
