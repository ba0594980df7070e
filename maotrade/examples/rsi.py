"""RSI mean reversion: buy when the relative strength index falls below ``oversold``, close
when it rises above ``overbought``.

RSI uses Wilder's smoothing over ``period`` bars. Parameters (``params``): ``epic``
(EURUSD), ``time_frame`` (60), ``qty`` (1000), ``period`` (14), ``oversold`` (30),
``overbought`` (70), ``stop_loss`` (fraction of the entry bar's close; 0 = none).
"""
from __future__ import annotations

from typing import Optional

from maotrade.examples._base import PositionTracking


class RsiReversion(PositionTracking):
    """Long when oversold, flat again when overbought."""

    def on_start(self) -> None:
        p = self.params
        self.epic = p.get("epic", "EURUSD")
        self.qty = float(p.get("qty", 1000))
        self.period = int(p.get("period", 14))
        self.oversold, self.overbought = float(p.get("oversold", 30)), float(p.get("overbought", 70))
        self.stop_loss = float(p.get("stop_loss", 0))
        self.previous_close: Optional[float] = None
        self.gains: list[float] = []
        self.losses: list[float] = []
        self.avg_gain = self.avg_loss = 0.0
        self.subscribe(self.epic, int(p.get("time_frame", 60)))

    def rsi(self, close: float) -> Optional[float]:
        """Feed one close; return the RSI once ``period`` changes were seen."""
        previous, self.previous_close = self.previous_close, close
        if previous is None:
            return None
        change = close - previous
        gain, loss = max(change, 0.0), max(-change, 0.0)
        if len(self.gains) < self.period:
            self.gains.append(gain)
            self.losses.append(loss)
            if len(self.gains) < self.period:
                return None
            self.avg_gain, self.avg_loss = sum(self.gains) / self.period, sum(self.losses) / self.period
        else:
            self.avg_gain = (self.avg_gain * (self.period - 1) + gain) / self.period
            self.avg_loss = (self.avg_loss * (self.period - 1) + loss) / self.period
        if self.avg_loss == 0:
            return 100.0
        return 100 - 100 / (1 + self.avg_gain / self.avg_loss)

    def on_market_data(self, bar: dict) -> None:
        if not bar.get("completed") or bar.get("epic") != self.epic:
            return
        value = self.rsi(bar["close"])
        if value is None or self.working:
            return
        if value < self.oversold and self.position == 0:
            stop = bar["close"] * (1 - self.stop_loss) if self.stop_loss else None
            self.working = self.open_order(self.epic, self.qty, stop_loss=stop)
        elif value > self.overbought and self.position > 0:
            self.working = self.close_order(self.epic)
