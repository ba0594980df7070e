"""Strategies used by the tests: they record what they see in a JSON-lines file."""
import json

from maotrade.strategy import Strategy


class RecordingStrategy(Strategy):
    """Subscribe, buy ``qty`` on the first completed bar, ask for the portfolio when filled."""

    def on_start(self):
        self.out = open(self.params["record"], "a")
        self.ordered = False
        self.subscribe(self.params.get("epic", "EURUSD"), 1)
        self.write({"event": "start", "accounts": self.accounts})

    def write(self, item):
        self.out.write(json.dumps(item) + "\n")
        self.out.flush()

    def on_market_data(self, data):
        self.write({"event": "bar", **data})
        if data["completed"] and not self.ordered:
            self.ordered = True
            cid = self.open_order(data["epic"], self.params.get("qty", 100))
            self.write({"event": "sent", "client_order_id": cid})

    def on_order(self, order):
        self.write({"event": "order", **order})
        if order["status"] == "FILLED":
            self.request_portfolio()
            self.request_account_info()

    def on_portfolio(self, portfolio):
        self.write({"event": "portfolio", **portfolio})

    def on_account_info(self, info):
        self.write({"event": "account_info", **info})

    def on_stop(self):
        self.write({"event": "stop"})
        self.out.close()


class SlowStrategy(Strategy):
    """A strategy that takes ``delay`` seconds over every bar (a slow consumer), and places
    one order on ``order_account`` at start; records its order updates."""

    def on_start(self):
        import time
        self._sleep = time.sleep
        self.out = open(self.params["record"], "a")
        self.bars = 0
        self.subscribe("FLOOD", 1, account=self.params["flood_account"])
        self.open_order("EURUSD", 1, account=self.params["order_account"])

    def on_market_data(self, data):
        self.bars += 1
        self._sleep(self.params.get("delay", 0.005))  # the fault under test: a slow consumer

    def on_order(self, order):
        self.out.write(json.dumps({"event": "order", "bars_seen": self.bars, **order}) + "\n")
        self.out.flush()

    def on_stop(self):
        self.out.close()
