"""An Account Manager that streams numbered bars as fast as the engine takes them.

It is a source that can wait: while the engine holds its market data (a client has too
many bars waiting) it sends nothing, so no bar is ever conflated away."""
from __future__ import annotations

from maotrade.account_manager import BaseAccountManager
from maotrade.config import BrokerSettings

CHUNK = 2000
MAX_PENDING_FRAMES = 8


class FloodSettings(BrokerSettings):
    """brokerConfig of the flood broker: how many bars each subscription streams."""

    bars: int = 1_000_000
    completed: bool = True  # False: stream forming bars (what a busy instrument mostly sends)


class FloodAccountManager(BaseAccountManager):
    """On subscribe, send ``bars`` completed bars numbered 0..bars-1 in ``date``."""

    settings_model = FloodSettings
    CAPABILITIES = {**BaseAccountManager.CAPABILITIES, "pause": True}

    def __init__(self, config, in_queue, out_queue):
        super().__init__(config, in_queue, out_queue)
        self.streams: dict[tuple, int] = {}

    def on_account_manager_init(self):
        info = {"account": self.account_id, "currency": "USD", "balance": 0.0, "equity": 0.0,
                "available": 0.0, "margin_used": 0.0, "unrealized_pnl": 0.0, "realized_pnl": 0.0}
        return True, info, {"positions": [], "orders": []}, {}, {}, {1: "SECOND"}

    def account_manager_main(self, time_now: int) -> None:
        if self.market_data_held:
            return  # the engine's market_data_hold(false) wakes the loop again
        for key, sent in list(self.streams.items()):
            if self.out_queue.pending > MAX_PENDING_FRAMES:
                self.out_queue.flush()
                self.wake_soon()
                return
            epic, time_frame = key
            end = min(sent + CHUNK, self.settings.bars)
            self.send_realtime_bars(epic, time_frame, [(i, 1.0, 1.5, 0.5, 1.25, 10.0) for i in range(sent, end)],
                                    completed=self.settings.completed)
            self.out_queue.flush()
            if end >= self.settings.bars:
                del self.streams[key]
            else:
                self.streams[key] = end
                self.wake_soon()

    def do_async_request_account_info(self):
        self.send_account_info({"account": self.account_id, "balance": 0.0})

    def do_async_request_portfolio(self):
        self.send_portfolio({"positions": [], "orders": []})

    def do_async_request_market_data(self, request: dict) -> bool:
        key = (request["epic"], int(request["time_frame"]))
        if request.get("action") == "unsubscribe":
            self.streams.pop(key, None)
        else:
            self.streams[key] = 0
        return True

    def do_async_request_order_open(self, order):
        self.send_order_refused(order, "the flood broker takes no orders")

    def do_async_request_order_close(self, order):
        self.send_order_refused(order, "the flood broker takes no orders")

    def do_async_request_stop_order(self, order):
        self.send_order_refused(order, "the flood broker takes no orders", kind="order_stop")
