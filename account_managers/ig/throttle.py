"""Client-side throttle for IG's request allowances (sliding one-minute windows).

IG counts requests per application (non-trading) and per account (trading and
non-trading separately) and answers ``exceeded-...-allowance`` past the limit. Every
REST call takes a slot first; a call that would have to wait longer than its budget
fails with ``TemporaryError`` instead of being sent late.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from maotrade.errors import TemporaryError

TRADING = "trading"
NON_TRADING = "non_trading"


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit = limit
        self.window = window
        self.events: deque[float] = deque()

    def wait_time(self, now: float) -> float:
        """Seconds until one more event fits (0 if it fits now)."""
        while self.events and now - self.events[0] >= self.window:
            self.events.popleft()
        if len(self.events) < self.limit:
            return 0.0
        return self.events[0] + self.window - now


class Throttle:
    """The three IG allowances; ``acquire(kind)`` before every request."""

    def __init__(self, app_non_trading: int, account_trading: int, account_non_trading: int,
                 window: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.windows = {
            TRADING: [SlidingWindow(account_trading, window)],
            NON_TRADING: [SlidingWindow(app_non_trading, window), SlidingWindow(account_non_trading, window)],
        }
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Lock()

    def acquire(self, kind: str, budget: float) -> float:
        """Take a slot of ``kind``, waiting at most ``budget`` seconds; return the wait."""
        waited = 0.0
        while True:
            with self.lock:
                now = self.clock()
                delay = max(w.wait_time(now) for w in self.windows[kind])
                if delay <= 0:
                    for w in self.windows[kind]:
                        w.events.append(now)
                    return waited
            if waited + delay > budget:
                raise TemporaryError(f"IG {kind.replace('_', '-')} request allowance reached; "
                                     f"next slot in {delay:.1f}s")
            self.sleep(delay)
            waited += delay

    def delay(self, kind: str) -> float:
        """Seconds until a request of ``kind`` would fit, without taking a slot."""
        with self.lock:
            now = self.clock()
            return max(w.wait_time(now) for w in self.windows[kind])


def reconnect_pace(limit_per_window: int, reserve: int, window: float = 60.0) -> float:
    """Shortest interval between reconnect attempts that leaves ``reserve`` requests of a
    ``limit_per_window`` allowance free in any window: attempts made while the broker is
    down each spend a slot, and the connection that succeeds needs ``reserve`` of them at
    once (login, account, positions, orders). Probing faster would spend the allowance the
    recovery needs, and the account would wait out the window after the broker is back."""
    return window / max(1, limit_per_window - reserve)
