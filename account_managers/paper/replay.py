"""Replay mode of the paper broker: one instrument's prices come bar by bar from a file.

Bars are matched and sent one at a time, each only when the engine says ``replay_advance``
(after the strategies have handled the previous bar; see engine/replay.py), so a strategy
run live on a replaying paper account places and fills exactly the orders it does in a
backtest of the same file.
"""
from __future__ import annotations

from typing import Optional

from maotrade.backtest.data import DataError, load_bars
from maotrade.errors import ConfigError


class ReplayFeed:
    """The bars of ``path`` and how far the replay got (``cursor``: next bar to send)."""

    def __init__(self, path: str, epic: str, time_frame: int, saved: Optional[dict] = None):
        try:
            self.bars = load_bars([path], epic, time_frame)
        except DataError as exc:
            raise ConfigError(f"paper replay_file: {exc}") from None
        saved = saved or {}
        # A restart continues the same file where it stopped; another file starts over.
        same = saved.get("file") == str(path)
        self.path = str(path)
        self.cursor = int(saved.get("cursor", 0)) if same else 0
        self.finished = bool(saved.get("finished")) if same else False
        self.credit = False  # the engine allowed one more bar
        self.subscribed = False

    def next_bar(self) -> Optional[dict]:
        """Take the next bar if the engine allowed it and someone listens, else None.

        Past the last bar, an allowed step only marks the replay finished."""
        if not (self.credit and self.subscribed):
            return None
        self.credit = False
        if self.cursor >= len(self.bars):
            self.finished = True
            return None
        bar = self.bars[self.cursor]
        self.cursor += 1
        return bar

    @property
    def last_close(self) -> Optional[float]:
        """Close of the last bar sent (the price after a restart)."""
        return self.bars[self.cursor - 1]["close"] if self.cursor > 0 else None

    def state(self) -> dict:
        """What the broker-side record keeps."""
        return {"file": self.path, "cursor": self.cursor, "finished": self.finished, "bars": len(self.bars)}
