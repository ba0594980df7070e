"""The ccxt broker's rig for the shared contract suite (tests/contract/).

``CCXTRig`` has the methods of the suite's ``BrokerRig`` (start, stop, document, can,
reset_price, move_price, fill, go_down, come_back, restart, repeat_fill, send_garbage,
connected, order, times_received, orders_received, position, stops), backed by the local
Binance-protocol exchange. Register it in the suite's ``RIGS`` as
``{"ccxt-spot": CCXTSpotRig, "ccxt-usdm": CCXTUsdmRig}``; it subclasses nothing so
it imports without the suite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from tests.ccxt.accounts import EPICS, ccxt_document
from tests.ccxt.exchange_server import SPOT, USDM, ExchangeServer

#: The suite's capability names this rig's exchange can be made to do.
CAN = frozenset({"move_price", "manual_fill", "outage", "broker_restart", "duplicate_fill", "garbage"})
STATUS = {"NEW": "working", "PARTIALLY_FILLED": "working", "FILLED": "filled", "CANCELED": "cancelled",
          "REJECTED": "rejected", "EXPIRED": "cancelled"}


class CCXTRig:
    """A ccxt account on the local exchange (venue set by the subclass)."""

    venue = SPOT
    FAKE_CAN = CAN
    qty = 0.01
    reference = 50000.0

    def __init__(self, workdir: Path, account: str):
        self.workdir = Path(workdir)
        self.account = account
        self.name = f"ccxt-{self.venue}"
        self.epic = EPICS[self.venue]
        self.server: Optional[ExchangeServer] = None

    def start(self) -> "CCXTRig":
        self.server = ExchangeServer(self.venue, price=self.reference).start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def document(self) -> dict:
        return ccxt_document(self.server, self.account, max_retries=1000)

    def can(self, capability: str) -> bool:
        return capability in self.FAKE_CAN

    def reset_price(self) -> None:
        self.move_price(self.reference)

    def move_price(self, price: float) -> None:
        self.server.set_price(price)

    def fill(self, client_order_id: str, qty: float) -> None:
        self.server.fill_order(client_order_id, qty)

    def go_down(self) -> None:
        self.server.go_down()

    def come_back(self) -> None:
        self.server.come_back()

    def restart(self) -> None:
        self.server.restart()

    def repeat_fill(self, client_order_id: str) -> None:
        self.server.repeat_fill(client_order_id)

    def send_garbage(self) -> None:
        self.server.send_garbage()

    def connected(self) -> bool:
        return bool(self.server._user_sockets)

    def order(self, client_order_id: str) -> Optional[dict]:
        found = self.server.order_by_client_id(client_order_id)
        if found is None:
            algo = next((a for a in self.server.algos.values() if a["clientAlgoId"] == client_order_id), None)
            if algo is None:
                return None
            placed = self.server.orders.get(int(algo["actualOrderId"] or 0))
            if placed is None:
                return {"status": "cancelled" if algo["algoStatus"] == "CANCELED" else "working", "filled": 0.0}
            found = placed
        return {"status": STATUS.get(found.status, "working"), "filled": float(found.executed)}

    def times_received(self, client_order_id: str) -> int:
        return self.server.order_posts.get(client_order_id, 0)

    def orders_received(self) -> int:
        return sum(self.server.order_posts.values())

    def position(self) -> float:
        if self.venue == USDM:
            return float(self.server.position_qty)
        return float(self.server.balances.get("BTC", 0))

    def stops(self, client_order_id: str) -> tuple:
        return None, None  # no native brackets: the engine's legs are orders of their own


class CCXTSpotRig(CCXTRig):
    """Binance spot through ccxt."""

    venue = SPOT


class CCXTUsdmRig(CCXTRig):
    """Binance USD-M futures through ccxt."""

    venue = USDM
