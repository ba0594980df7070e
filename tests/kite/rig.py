"""The Kite broker as the contract suite drives a broker: the local Kite Connect, an
account document for it, the faults it can be made to produce, and its own record.

``KiteRig`` has the method set of the contract suite's broker rig; ``tests/contract/rigs.py``
registers it as ``kite`` (mixed with ``BrokerRig``), so every contract scenario runs on Kite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from account_managers.kite.parsing import tag_for
from tests.kite.conftest import kite_document
from tests.kite.server import KiteServer

# Kite order states -> the rig's broker-side states.
_STATES = {"COMPLETE": "filled", "CANCELLED": "cancelled", "REJECTED": "rejected"}


class KiteRig:
    """The local Kite Connect (REST and KiteTicker) with one account on it."""

    name = "kite"
    FAKE_CAN = frozenset({"move_price", "manual_fill", "outage", "broker_restart", "duplicate_fill", "garbage"})
    epic = "INFY"
    epic_broker = "NSE:INFY"
    qty = 8.0  # whole shares, and a quarter of it too (the partial-fill scenario fills qty / 4)
    reference = 1500.0
    SILENT_OUTAGE = False  # the ticker drops with the outage: the worker notices at once

    def __init__(self, workdir: Path, account: str):
        self.workdir = Path(workdir)
        self.account = account
        self.server = KiteServer()

    def start(self) -> "KiteRig":
        """Start the local Kite."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop it."""
        self.server.stop()

    def document(self) -> dict:
        """A Kite account document with a live access token and fast timeouts."""
        return kite_document(self.server, self.account, max_retries=1000, order_timeout=3.0)

    def can(self, capability: str) -> bool:
        """True if the local Kite can be made to do ``capability``."""
        return capability in self.FAKE_CAN

    def reset_price(self) -> None:
        """Put INFY back at ``reference``."""
        self.move_price(self.reference)

    def move_price(self, price: float) -> None:
        """Move the last price; working orders it reaches fill, ticks go out."""
        self.server.set_price(self.epic_broker, price)

    def fill(self, client_order_id: str, qty: float) -> None:
        """Fill ``qty`` of a working order (one Kite trade)."""
        if qty != int(qty):
            raise ValueError(f"Kite trades whole shares: cannot fill {qty:g} of {client_order_id}")
        self.server.manual_fill(tag_for(client_order_id), int(qty))

    def go_down(self) -> None:
        """REST answers NetworkException and the ticker drops, until ``come_back``."""
        self.server.go_down()

    def come_back(self) -> None:
        """Kite is reachable again."""
        self.server.come_back()

    def restart(self) -> None:
        """Drop every ticker connection; orders and positions stay."""
        self.server.drop_ticker()

    def repeat_fill(self, client_order_id: str) -> None:
        """Send the order's newest update again (its trades are fetched again, same ids)."""
        self.server.repeat_last_update(tag_for(client_order_id))

    def send_garbage(self) -> None:
        """Malformed text, JSON and binary frames on the ticker."""
        self.server.send_garbage()

    def connected(self) -> bool:
        """True while a ticker connection is open."""
        return self.server.ticker_clients() > 0

    def _row(self, client_order_id: str) -> Optional[dict]:
        tag = tag_for(client_order_id)
        rows = [o for o in self.server.snapshot()["orders"] if o["tag"] == tag]
        return rows[-1] if rows else None

    def order(self, client_order_id: str) -> Optional[dict]:
        """Kite's record of one order: ``{"status", "filled"}``, or None."""
        row = self._row(client_order_id)
        if row is None:
            return None
        return {"status": _STATES.get(row["status"], "working"), "filled": float(row["filled_quantity"])}

    def times_received(self, client_order_id: str) -> int:
        """How many orders carrying this order's tag Kite took."""
        return self.server.placed_tags.get(tag_for(client_order_id), 0)

    def orders_received(self) -> int:
        """How many orders Kite took."""
        return len(self.server.snapshot()["orders"])

    def position(self) -> float:
        """Kite's net quantity in INFY, every product."""
        return float(self.server.net_quantity(self.epic_broker))

    def stops(self, client_order_id: str) -> tuple:
        """(stop loss, take profit) Kite holds for a bracket: Kite keeps no stops on a
        position, so they are the trigger of the working ``/SL`` order and the limit of the
        working ``/TP`` order the engine placed."""
        levels = []
        for suffix, field in (("/SL", "trigger_price"), ("/TP", "price")):
            row = self._row(client_order_id + suffix)
            working = row is not None and _STATES.get(row["status"], "working") == "working"
            levels.append(float(row[field]) if working else None)
        return tuple(levels)
