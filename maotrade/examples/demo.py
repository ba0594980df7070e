"""The demo strategy: a fast/slow moving-average crossover on one-second bars.

It exists to show the whole path working (bars in, orders out, fills back), not to make
money. Parameters (``params``): ``epic`` (EURUSD), ``qty`` (1000), ``fast`` (2),
``slow`` (5), ``time_frame`` (1), ``stop_distance`` (0.002, a fraction of price).
"""
from __future__ import annotations

from collections import deque

from maotrade.strategy import Strategy


class DemoStrategy(Strategy):
    """Buy when the fast average crosses above the slow one, close when it crosses below."""

    def on_start(self) -> None:
        p = self.params
        self.epic = p.get("epic", "EURUSD")
        self.qty = float(p.get("qty", 1000))
        self.fast, self.slow = int(p.get("fast", 2)), int(p.get("slow", 5))
        self.stop_distance = float(p.get("stop_distance", 0.002))
        self.closes: deque = deque(maxlen=self.slow)
        self.position = 0.0
        self.working = ""
        self.previous_diff = None
        self.subscribe(self.epic, int(p.get("time_frame", 1)))

    def on_market_data(self, data: dict) -> None:
        if not data.get("completed") or data.get("epic") != self.epic:
            return
        self.closes.append(data["close"])
        if len(self.closes) < self.slow:
            return
        closes = list(self.closes)
        diff = sum(closes[-self.fast:]) / self.fast - sum(closes) / self.slow
        previous, self.previous_diff = self.previous_diff, diff
        if previous is None or self.working:
            return
        price = data["close"]
        if previous <= 0 < diff and self.position <= 0:
            self.working = self.open_order(self.epic, self.qty, stop_loss=price * (1 - self.stop_distance),
                                           take_profit=price * (1 + 2 * self.stop_distance))
        elif previous >= 0 > diff and self.position > 0:
            self.working = self.close_order(self.epic)

    def on_order(self, order: dict) -> None:
        if order.get("client_order_id") != self.working:
            if order.get("status") == "FILLED" and order.get("source") == "broker":
                self.position = 0.0  # the broker closed us out on a stop loss / take profit
            return
        if order["status"] in ("FILLED", "REJECTED", "CANCELLED", "EXPIRED"):
            if order["status"] == "FILLED":
                self.position += order["filled_qty"]
            self.working = ""
