"""Moving-average crossover: long while the fast average of closes is above the slow one.

Parameters (``params``): ``epic`` (EURUSD; or ``epics``, a list or comma-separated text,
to trade several instruments, each on its own), ``time_frame`` (60), ``qty`` (1000),
``fast`` (10), ``slow`` (30), ``stop_loss`` and ``take_profit`` (fractions of the entry
bar's close; 0 = none).
"""
from __future__ import annotations

from collections import deque

from maotrade.examples._base import PositionTracking
from maotrade.optimize.space import FloatRange, IntRange


class _Averages:
    """Running sums of the last ``fast`` and ``slow`` closes of one instrument (``closes``
    keeps the last ``slow``)."""

    __slots__ = ("closes", "fast_sum", "slow_sum", "previous_diff")

    def __init__(self, slow: int):
        self.closes: deque = deque(maxlen=slow)
        self.fast_sum = self.slow_sum = 0.0
        self.previous_diff = None


class MovingAverageCross(PositionTracking):
    """Buy when the fast average crosses above the slow one; close when it crosses below."""

    #: what `maotrade optimize` may tune (fast >= slow is refused by on_start and not counted).
    param_space = {"fast": IntRange(2, 30), "slow": IntRange(10, 120, step=5),
                   "stop_loss": FloatRange(0.0, 0.02, step=0.005), "take_profit": FloatRange(0.0, 0.04, step=0.01)}

    def on_start(self) -> None:
        p = self.params
        epics = p.get("epics") or [p.get("epic", "EURUSD")]
        self.epics = [e.strip() for e in epics.split(",")] if isinstance(epics, str) else list(epics)
        self.epic = self.epics[0]
        self.qty = float(p.get("qty", 1000))
        self.fast, self.slow = int(p.get("fast", 10)), int(p.get("slow", 30))
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        self.stop_loss = float(p.get("stop_loss", 0))
        self.take_profit = float(p.get("take_profit", 0))
        self.averages = {epic: _Averages(self.slow) for epic in self.epics}
        for epic in self.epics:
            self.subscribe(epic, int(p.get("time_frame", 60)))

    def on_market_data(self, bar: dict) -> None:
        state = self.averages.get(bar["epic"])
        if state is None or not bar["completed"]:
            return
        # Written for speed: it runs on every bar of a backtest.
        close = bar["close"]
        closes, fast, slow = state.closes, self.fast, self.slow
        if len(closes) == slow:
            # Warmed up: the close leaving each window is read before the append drops it.
            fast_sum = state.fast_sum + close - closes[-fast]
            slow_sum = state.slow_sum + close - closes[0]
            closes.append(close)
        else:
            closes.append(close)
            count = len(closes)
            fast_sum, slow_sum = state.fast_sum + close, state.slow_sum + close
            if count > fast:
                fast_sum -= closes[-fast - 1]
            if count < slow:
                state.fast_sum, state.slow_sum = fast_sum, slow_sum
                return
        state.fast_sum, state.slow_sum = fast_sum, slow_sum
        diff = fast_sum / fast - slow_sum / slow
        previous, state.previous_diff = state.previous_diff, diff
        if previous is None or previous * diff > 0:
            return  # not warmed up, or no crossing: both averages kept their order
        if previous <= 0 < diff:
            epic = bar["epic"]
            if self.position_in(epic) == 0 and not self.working_in(epic):
                self.track(epic, self.open_order(
                    epic, self.qty,
                    stop_loss=close * (1 - self.stop_loss) if self.stop_loss else None,
                    take_profit=close * (1 + self.take_profit) if self.take_profit else None))
        elif previous >= 0 > diff:
            epic = bar["epic"]
            if self.position_in(epic) > 0 and not self.working_in(epic):
                self.track(epic, self.close_order(epic))
