"""Bars: the normalized MAOTrade bar and a builder that aggregates prices into bars.

A bar is ``{epic, time_frame, date, open, high, low, close, volume, completed}`` with
``date`` the bar's start in epoch milliseconds and ``time_frame`` in seconds.
``completed`` is False while the bar is still forming.
"""
from __future__ import annotations

from typing import Optional


def make_bar(epic: str, time_frame: int, date: int, open_: float, high: float, low: float,
             close: float, volume: float = 0.0, completed: bool = True) -> dict:
    """Return a normalized bar dict."""
    return {"epic": epic, "time_frame": int(time_frame), "date": int(date), "open": float(open_),
            "high": float(high), "low": float(low), "close": float(close),
            "volume": float(volume), "completed": bool(completed)}


def bar_start(time_ms: int, time_frame: int) -> int:
    """Return the start (epoch ms) of the ``time_frame``-second bar containing ``time_ms``."""
    span = int(time_frame) * 1000
    return (int(time_ms) // span) * span


class BarBuilder:
    """Aggregate prices (or smaller bars) into bars of one time frame for one epic.

    ``update`` returns the bars that became complete, oldest first; ``current`` is the
    bar still forming.
    """

    def __init__(self, epic: str, time_frame: int):
        if int(time_frame) <= 0:
            raise ValueError(f"time_frame must be a positive number of seconds, got {time_frame}")
        self.epic = epic
        self.time_frame = int(time_frame)
        self.current: Optional[dict] = None

    def update(self, time_ms: int, price: float, volume: float = 0.0) -> list[dict]:
        """Add one trade or quote price; return the bars it completed."""
        return self.update_bar(time_ms, price, price, price, price, volume)

    def update_bar(self, time_ms: int, open_: float, high: float, low: float, close: float,
                   volume: float = 0.0) -> list[dict]:
        """Add one smaller bar starting at ``time_ms``; return the bars it completed."""
        start = bar_start(time_ms, self.time_frame)
        done: list[dict] = []
        bar = self.current
        if bar is not None and start < bar["date"]:
            return done  # late data for a bar already sent: ignore rather than reopen
        if bar is not None and start > bar["date"]:
            bar["completed"] = True
            done.append(bar)
            bar = None
        if bar is None:
            self.current = make_bar(self.epic, self.time_frame, start, open_, high, low, close,
                                    volume, completed=False)
        else:
            bar["high"] = max(bar["high"], high)
            bar["low"] = min(bar["low"], low)
            bar["close"] = close
            bar["volume"] += volume
        return done

    def close_due(self, time_ms: int) -> list[dict]:
        """Complete the forming bar if its time is over (call on a timer); return it."""
        bar = self.current
        if bar is not None and time_ms >= bar["date"] + self.time_frame * 1000:
            bar["completed"] = True
            self.current = None
            return [bar]
        return []
