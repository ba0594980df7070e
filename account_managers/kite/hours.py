"""Market hours of the exchange Kite routes to, on an injectable clock."""
from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Iterable
from zoneinfo import ZoneInfo


class MarketHours:
    """One daily session (open to close, exchange time) on trading days, minus holidays.

    ``clock`` returns epoch seconds; tests pass their own to stand anywhere in the week.
    """

    def __init__(self, open_at: str, close_at: str, timezone: str, trading_days: Iterable[int],
                 holidays: Iterable[str] = (), clock: Callable[[], float] = time.time):
        self.open_at = dt.time.fromisoformat(open_at)
        self.close_at = dt.time.fromisoformat(close_at)
        self.zone = ZoneInfo(timezone)
        self.trading_days = frozenset(trading_days)
        self.holidays = frozenset(dt.date.fromisoformat(d) for d in holidays)
        self.clock = clock

    def local_now(self) -> dt.datetime:
        """The clock's time at the exchange."""
        return dt.datetime.fromtimestamp(self.clock(), self.zone)

    def is_open(self) -> bool:
        """True while the exchange session is on."""
        return not self.closed_reason()

    def closed_reason(self) -> str:
        """Why the market is closed now ('' while it is open)."""
        now = self.local_now()
        stamp = now.strftime("%a %Y-%m-%d %H:%M %Z")
        if now.date() in self.holidays:
            return f"market holiday ({stamp})"
        if now.weekday() not in self.trading_days:
            return f"market closed on {now.strftime('%A')}s ({stamp})"
        if not self.open_at <= now.time().replace(tzinfo=None) < self.close_at:
            return (f"outside market hours {self.open_at:%H:%M}-{self.close_at:%H:%M} "
                    f"({stamp})")
        return ""
