"""What the example strategies share: the net position, counted from the fills they are told of."""
from __future__ import annotations

from maotrade.strategy import Strategy

DONE = ("FILLED", "REJECTED", "CANCELLED", "EXPIRED")


class PositionTracking(Strategy):
    """Keeps ``position`` (signed, from every fill reported in ``on_order``, including stop
    loss / take profit closes made by the broker) and ``working`` (the id of this strategy's
    order in flight, or "")."""

    position = 0.0
    working = ""

    def on_order(self, order: dict) -> None:
        sign = 1 if order.get("qty", 0) > 0 else -1
        for fill in order.get("fills") or []:
            self.position += sign * fill["qty"]
        if order.get("client_order_id") == self.working and order.get("status") in DONE:
            self.working = ""
