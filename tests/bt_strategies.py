"""Strategies for the backtest tests."""
from maotrade.strategy import Strategy


class ScriptedStrategy(Strategy):
    """Subscribe to ``epic``/``time_frame``; on bar number N (0-based) run ``script[str(N)]``:
    a list of ``[action, kwargs]`` (open, close, cancel_last, amend_last). Records what it sees
    in ``self.seen``."""

    def on_start(self):
        self.seen = []
        self.bar_count = 0
        self.last = ""
        self.subscribe(self.params["epic"], self.params["time_frame"])

    def on_market_data(self, bar):
        self.seen.append(("bar", bar["date"]))
        for action, kwargs in self.params.get("script", {}).get(str(self.bar_count), []):
            if action == "open":
                self.last = self.open_order(self.params["epic"], **kwargs)
            elif action == "close":
                self.last = self.close_order(self.params["epic"], **kwargs)
            elif action == "cancel_last":
                self.cancel_order(self.last)
            elif action == "amend_last":
                self.amend_order(self.last, **kwargs)
        self.bar_count += 1

    def on_order(self, order):
        self.seen.append(("order", order["status"], order.get("error")))
