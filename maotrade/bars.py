"""Bars: the normalized MAOTrade bar and a builder that aggregates prices into bars.

A bar is ``{epic, time_frame, date, open, high, low, close, volume, completed}`` with
``date`` the bar's start in epoch milliseconds and ``time_frame`` in seconds.
``completed`` is False while the bar is still forming.
"""
from __future__ import annotations

from typing import Optional

from maotrade.errors import ProtocolError


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
        # Start of the newest bar sent as completed: data dated in it or before is late.
        self._completed_date: Optional[int] = None

    def update(self, time_ms: int, price: float, volume: float = 0.0) -> list[dict]:
        """Add one trade or quote price; return the bars it completed."""
        return self.update_bar(time_ms, price, price, price, price, volume)

    def update_bar(self, time_ms: int, open_: float, high: float, low: float, close: float,
                   volume: float = 0.0) -> list[dict]:
        """Add one smaller bar starting at ``time_ms``; return the bars it completed."""
        start = bar_start(time_ms, self.time_frame)
        done: list[dict] = []
        bar = self.current
        late = self._completed_date is not None and start <= self._completed_date
        if late or (bar is not None and start < bar["date"]):
            return done  # late data for a bar already sent (even closed by the timer): ignore rather than reopen
        if bar is not None and start > bar["date"]:
            bar["completed"] = True
            self._completed_date = bar["date"]
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
            self._completed_date = bar["date"]
            self.current = None
            return [bar]
        return []


class BarBook:
    """Every bar subscription of one account: a ``BarBuilder`` per (broker epic, time frame).

    A broker feeds it prices by broker epic and sends what it returns; the forming bar of
    each subscription is returned too (``completed`` False), so a strategy sees it move.
    """

    def __init__(self):
        self._builders: dict[tuple[str, int], BarBuilder] = {}

    def subscribe(self, epic: str, epic_broker: str, time_frame: int) -> bool:
        """Start bars of ``epic`` (known to the broker as ``epic_broker``); False if running."""
        key = (epic_broker, int(time_frame))
        if key in self._builders:
            return False
        self._builders[key] = BarBuilder(epic, time_frame)
        return True

    def unsubscribe(self, epic_broker: str, time_frame: int) -> bool:
        """Stop one subscription; False if there was none."""
        return self._builders.pop((epic_broker, int(time_frame)), None) is not None

    def drop(self, epic_broker: str) -> None:
        """Stop every subscription of one broker epic."""
        for key in [k for k in self._builders if k[0] == epic_broker]:
            del self._builders[key]

    def watches(self, epic_broker: str) -> bool:
        """True if any subscription wants prices of ``epic_broker``."""
        return any(key[0] == epic_broker for key in self._builders)

    def __contains__(self, key: tuple) -> bool:
        return (key[0], int(key[1])) in self._builders

    def __iter__(self):
        return iter(self._builders)

    def on_price(self, epic_broker: str, time_ms: int, price: float, volume: float = 0.0) -> list[dict]:
        """Add one price to every subscription of ``epic_broker``; return completed bars,
        then each subscription's forming bar (a copy)."""
        out: list[dict] = []
        for (key_epic, _), builder in self._builders.items():
            if key_epic == epic_broker:
                out += builder.update(time_ms, price, volume)
                out.append(dict(builder.current))
        return out

    def close_due(self, time_ms: int) -> list[dict]:
        """Complete every forming bar whose time is over (call on a timer)."""
        out: list[dict] = []
        for builder in self._builders.values():
            out += builder.close_due(time_ms)
        return out


class MarketDataRequest:
    """A ``market_data_request`` as the engine sends it, checked once (docs/PROTOCOL.md)."""

    ACTIONS = frozenset({"subscribe", "unsubscribe", "history"})

    def __init__(self, request: dict):
        action = request.get("action", "subscribe")
        if action not in self.ACTIONS:
            raise ProtocolError(f"market data action must be one of {sorted(self.ACTIONS)}, got {action!r}")
        self.action: str = action
        self.epic: str = str(request.get("epic") or "")
        self.epic_broker: str = request["epicBroker"]
        self.time_frame: int = int(request["time_frame"])
        self.raw = request

    @property
    def subscribe(self) -> bool:
        """True to start bars, False to stop them."""
        return self.action != "unsubscribe"
