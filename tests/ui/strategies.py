"""A strategy the browser tests command: it places the orders written to its command file."""
import json
from pathlib import Path

from maotrade.strategy import Strategy


class CommandedStrategy(Strategy):
    """On every bar, place each new order line of ``params["commands"]`` (JSON: account, epic,
    qty, optional order_type and price); record each order update to ``params["record"]``."""

    def on_start(self):
        self.commands = Path(self.params["commands"])
        self.done = 0
        self.out = open(self.params["record"], "a")
        for account in self.params.get("bar_accounts", self.accounts):
            self.subscribe("EURUSD", 1, account=account)

    def on_market_data(self, data):
        if not self.commands.exists():
            return
        lines = self.commands.read_text().split("\n")[:-1]  # complete lines only
        for line in lines[self.done:]:
            order = json.loads(line)
            cid = self.open_order(order["epic"], order["qty"], order_type=order.get("order_type", "MARKET"),
                                  price=order.get("price"), account=order["account"])
            self.write({"event": "sent", "client_order_id": cid, "tag": order.get("tag")})
        self.done = len(lines)

    def write(self, item):
        self.out.write(json.dumps(item) + "\n")
        self.out.flush()

    def on_order(self, order):
        self.write({"event": "order", **order})

    def on_stop(self):
        self.out.close()
