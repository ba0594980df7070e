"""The strategy's side of a contract scenario: orders sent over the bus, answers awaited."""
from __future__ import annotations

import itertools
import os
from typing import Optional

from maotrade.order import OrderStatus
from tests.contract.rigs import BrokerRig
from tests.engine_kit import EngineProcess
from tests.kit import wait_until

_IDS = itertools.count(1)
FINAL = tuple(OrderStatus.DONE)
ORDER_DEADLINE = 30.0  # generous: a loaded 2-core machine runs several engines at once


def new_id(tag: str) -> str:
    """A client order id unique to this test run (at most 30 characters, leaving room for /SL)."""
    return f"{tag}-{os.getpid() % 10000}-{next(_IDS)}"[:30]


class Trader:
    """One scenario's strategy: it trades the rig's instrument on the engine's account."""

    def __init__(self, engine: EngineProcess, rig: BrokerRig):
        self.engine, self.rig = engine, rig
        self.account, self.epic = rig.account, rig.epic

    # -- orders -------------------------------------------------------------------------
    def open(self, tag: str, qty: float, **fields) -> str:
        """Send ``order_open``; return its client order id."""
        cid = fields.pop("client_order_id", None) or new_id(tag)
        self.engine.send("order_open", account=self.account, client_order_id=cid, epic=self.epic, qty=qty,
                         **fields)
        return cid

    def close(self, tag: str, qty: Optional[float] = None) -> str:
        """Send ``order_close`` for the instrument (all of the position when ``qty`` is None)."""
        cid = new_id(tag)
        fields = {} if qty is None else {"qty": qty}
        self.engine.send("order_close", account=self.account, client_order_id=cid, epic=self.epic, **fields)
        return cid

    def wait(self, cid: str, *statuses: str, since: int = 0, timeout: float = ORDER_DEADLINE) -> dict:
        """The first ``order`` message the strategy got about ``cid`` in one of ``statuses``."""
        return self.engine.wait_order(cid, statuses or FINAL, timeout=timeout, since=since)

    def answer(self, cid: str, request: str, since: int = 0, timeout: float = ORDER_DEADLINE) -> dict:
        """The ``order`` message answering the strategy's ``request`` about ``cid``."""
        return self.engine.wait_message(
            lambda m: m.get("type") == "order" and m.get("client_order_id") == cid and m.get("request") == request,
            timeout, since, what=f"answer to {request} of {cid}")

    def journaled(self, cid: str) -> Optional[dict]:
        """The engine's journaled order with all its fills (``orders_request`` for one order)."""
        return self.engine.journaled(self.account, cid)

    def wait_journaled(self, cid: str, *statuses: str, timeout: float = ORDER_DEADLINE) -> dict:
        """Wait until the journal holds ``cid`` in one of ``statuses``."""
        statuses = statuses or FINAL
        return wait_until(lambda: (lambda o: o if o and o["status"] in statuses else None)(self.journaled(cid)),
                          timeout, interval=0.1, what=f"journal: {cid} in {statuses}")

    # -- positions ----------------------------------------------------------------------
    def position(self) -> float:
        """The engine's position in the instrument."""
        portfolio = self.engine.account_status(self.account).get("portfolio") or {}
        return sum(p["qty"] for p in portfolio.get("positions", []) if p["epic"] == self.epic)

    def wait_positions(self, engine_qty: float, broker_qty: float, timeout: float = ORDER_DEADLINE) -> None:
        """Wait until the engine and the broker hold these positions; fail with both if they never do."""
        try:
            wait_until(lambda: abs(self.position() - engine_qty) < 1e-6 and abs(self.rig.position() - broker_qty) < 1e-6,
                       timeout, interval=0.1, what="positions")
        except AssertionError:
            raise AssertionError(f"expected engine {engine_qty:g} / broker {broker_qty:g}, have engine "
                                 f"{self.position():g} / broker {self.rig.position():g}") from None

    def flatten(self) -> None:
        """Cancel the engine's working orders and close what it holds (scenario clean-up; best effort)."""
        for order in self.engine.orders(account=self.account):
            if order["status"] in ("SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED") and order["order_type"] != "MARKET":
                self.engine.send("order_cancel", account=self.account, client_order_id=order["client_order_id"])
        if abs(self.position()) > 1e-9:
            cid = self.close("flat")
            try:
                self.wait(cid)
            except AssertionError:
                pass

    def ready(self, timeout: float = 110) -> dict:
        """Wait until the account is ready; return its status (fail with the state it is stuck in)."""
        try:
            return self.engine.wait_ready(self.account, timeout)
        except AssertionError:
            status = self.engine.account_status(self.account)
            raise AssertionError(f"account {self.account} not ready after {timeout}s: state "
                                 f"{status['state']!r}, reason {status.get('reason')!r}") from None


def fills_qty(order: dict) -> float:
    """The unsigned quantity of all fills of an order."""
    return sum(abs(f["qty"]) for f in order.get("fills") or [])
