"""Moving-average crossover: long while the fast average of closes is above the slow one.

Parameters (``params``): ``epic`` (EURUSD), ``time_frame`` (60), ``qty`` (1000), ``fast``
(10), ``slow`` (30), ``stop_loss`` and ``take_profit`` (fractions of the entry bar's
close; 0 = none).
"""
from __future__ import annotations

from collections import deque

from maotrade.examples._base import PositionTracking
from maotrade.optimize.space import FloatRange, IntRange


class MovingAverageCross(PositionTracking):
    """Buy when the fast average crosses above the slow one; close when it crosses below."""

    #: what `maotrade optimize` may tune (fast >= slow is refused by on_start and not counted).
    param_space = {"fast": IntRange(2, 30), "slow": IntRange(10, 120, step=5),
                   "stop_loss": FloatRange(0.0, 0.02, step=0.005), "take_profit": FloatRange(0.0, 0.04, step=0.01)}

    def on_start(self) -> None:
        p = self.params
        self.epic = p.get("epic", "EURUSD")
        self.qty = float(p.get("qty", 1000))
        self.fast, self.slow = int(p.get("fast", 10)), int(p.get("slow", 30))
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        self.stop_loss = float(p.get("stop_loss", 0))
        self.take_profit = float(p.get("take_profit", 0))
        self.closes: deque = deque(maxlen=self.slow)
        self.fast_sum = self.slow_sum = 0.0
        self.previous_diff = None
        self.subscribe(self.epic, int(p.get("time_frame", 60)))

    def on_market_data(self, bar: dict) -> None:
        if not bar.get("completed") or bar.get("epic") != self.epic:
            return
        self.closes.append(bar["close"])
        if len(self.closes) < self.slow:
            return
        closes = list(self.closes)
        diff = sum(closes[-self.fast:]) / self.fast - sum(closes) / self.slow
        previous, self.previous_diff = self.previous_diff, diff
        if previous is None or self.working:
            return
        price = bar["close"]
        if previous <= 0 < diff and self.position == 0:
            self.working = self.open_order(
                self.epic, self.qty,
                stop_loss=price * (1 - self.stop_loss) if self.stop_loss else None,
                take_profit=price * (1 + self.take_profit) if self.take_profit else None)
        elif previous >= 0 > diff and self.position > 0:
            self.working = self.close_order(self.epic)
