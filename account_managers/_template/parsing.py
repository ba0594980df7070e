"""Pure translation between the broker's vocabulary and MAOTrade's (no I/O, no clock).

Every request body is built here and every answer is read here, so the tables and the
mapping can be tested in microseconds. Broker errors are translated into MAOTrade's error
classes here too (``raise InvalidOrder(...) from exc``), named by what the caller must do.
"""
from __future__ import annotations

from maotrade.errors import InvalidOrder
from maotrade.order import BaseOrder, OrderStatus, OrderType

#: the broker's order states -> MAOTrade's (a table, not an if-chain).
STATUS = {"working": OrderStatus.ACCEPTED, "done": OrderStatus.FILLED, "killed": OrderStatus.CANCELLED,
          "refused": OrderStatus.REJECTED}
#: MAOTrade order types -> the broker's.
ORDER_TYPE = {OrderType.MARKET: "MKT", OrderType.LIMIT: "LMT", OrderType.STOP: "STP"}


def order_body(order: BaseOrder) -> dict:
    """The body of a new-order request; the client order id travels as the broker's own id."""
    if order.order_type not in ORDER_TYPE:
        raise InvalidOrder(f"order {order.client_order_id}: {order.order_type} is not offered")
    return {"clientId": order.client_order_id, "symbol": order.epicBroker, "side": "BUY" if order.qty > 0 else "SELL",
            "quantity": abs(order.qty), "type": ORDER_TYPE[order.order_type], "price": order.price}
