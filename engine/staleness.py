"""Stale market data: a subscription silent beyond its time frame's tolerance is an event.

Tolerance of a ``time_frame``-second subscription: ``STALE_FACTOR * time_frame +
STALE_GRACE`` seconds (a 1 s subscription goes stale after 7 s of silence, a 1-minute one
after 125 s). Any bar counts as data, forming or completed. Pure: the caller passes the
time.
"""
from __future__ import annotations

from dataclasses import dataclass

STALE_FACTOR = 2.0
STALE_GRACE = 5.0


def tolerance(time_frame: int) -> float:
    """Seconds of silence after which a subscription of ``time_frame`` seconds is stale."""
    return STALE_FACTOR * max(int(time_frame), 1) + STALE_GRACE


@dataclass
class Watch:
    """What the monitor knows of one subscription."""

    last_seen: float
    stale: bool = False


class StaleDataMonitor:
    """Track subscriptions keyed by (account, epic, time_frame); report changes of staleness."""

    def __init__(self):
        self.watches: dict[tuple, Watch] = {}

    def watch(self, key: tuple, now: float) -> None:
        """Start watching a subscription (silence is counted from now)."""
        self.watches.setdefault(key, Watch(now))

    def unwatch(self, key: tuple) -> None:
        """Stop watching a subscription."""
        self.watches.pop(key, None)

    def restart(self, account: str, now: float) -> None:
        """Count silence afresh for an account's subscriptions (its worker was restarted)."""
        for key, watch in self.watches.items():
            if key[0] == account:
                watch.last_seen = max(watch.last_seen, now)

    def seen(self, key: tuple, now: float) -> bool:
        """Record data for ``key``; return True if that clears a stale state."""
        watch = self.watches.get(key)
        if watch is None:
            return False
        watch.last_seen = now
        if watch.stale:
            watch.stale = False
            return True
        return False

    def check(self, now: float) -> list[tuple[tuple, float]]:
        """Return (key, silent seconds) for every subscription that has just gone stale."""
        newly = []
        for key, watch in self.watches.items():
            silent = now - watch.last_seen
            if not watch.stale and silent > tolerance(key[2]):
                watch.stale = True
                newly.append((key, silent))
        return newly

    def stale(self, account: str) -> list[dict]:
        """The stale subscriptions of ``account``."""
        return [{"epic": k[1], "time_frame": k[2]} for k, w in self.watches.items() if k[0] == account and w.stale]
