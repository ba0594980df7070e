"""One rig per broker: its fake (or itself, for paper), how to configure an account on it,
what a test can make it do, and the broker's own record to check the engine against.

``BrokerRig`` is the abstract fixture of the contract suite: every scenario talks to a
rig only through these methods, and each broker's rig overrides them. A rig declares in
``FAKE_CAN`` what its broker side can be made to do; a scenario needing something else
is skipped with a reason naming that capability (never the broker).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Optional

import pytest

from account_managers.ig.parsing import deal_reference
from tests.fix.proxy import TcpRelay
from tests.fix.quickfix_acceptor import QuickFixAcceptor
from tests.ib.fake_tws import FakeTWS
from tests.ig.simulator import IGSimulator
from tests.kit import FIX_SYMBOL, fix_document, free_port, ib_document, ig_document, paper_document, wait_until
from tests.kite.rig import KiteRig as LocalKiteRig

# What a fake can be made to do, beyond taking orders.
MOVE_PRICE = "move_price"            # set the market price from the test
MANUAL_FILL = "manual_fill"          # fill part of a resting order on demand
OUTAGE = "outage"                    # become unreachable, then come back
BROKER_RESTART = "broker_restart"    # restart the broker keeping its orders and positions
DUPLICATE_FILL = "duplicate_fill"    # send one execution again with the same id
GARBAGE = "garbage"                  # put malformed data on the broker's wire

CAPABILITY_WHY = {
    MOVE_PRICE: "the broker's price cannot be set from outside the worker",
    MANUAL_FILL: "the broker fills orders whole; nothing can make it fill part of one",
    OUTAGE: "the broker cannot be made unreachable from the test",
    BROKER_RESTART: "the broker has no life apart from its worker to restart",
    DUPLICATE_FILL: "the broker has no wire on which an execution could arrive twice",
    GARBAGE: "the broker has no wire that could carry malformed data",
}

# Broker-side order states as every rig reports them.
WORKING, FILLED, CANCELLED, REJECTED = "working", "filled", "cancelled", "rejected"


class BrokerRig:
    """The abstract broker of the contract suite; one subclass per broker."""

    name = ""
    FAKE_CAN: frozenset = frozenset()
    epic = "EURUSD"       # the MAOTrade instrument the scenarios trade
    qty = 1.0             # the size of one order
    reference = 1.0       # the price the market is set to before each scenario
    SILENT_OUTAGE = False  # True: after go_down the worker learns of the outage only by trying

    def __init__(self, workdir: Path, account: str):
        self.workdir = Path(workdir)
        self.account = account

    # -- life ------------------------------------------------------------------------
    def start(self) -> "BrokerRig":
        """Start the broker's fake."""
        return self

    def stop(self) -> None:
        """Stop the broker's fake."""

    def document(self) -> dict:
        """The account document (broker config, account config, epic mapping)."""
        raise NotImplementedError

    def can(self, capability: str) -> bool:
        """True if this rig's broker side can be made to do ``capability``."""
        return capability in self.FAKE_CAN

    # -- market ----------------------------------------------------------------------
    def reset_price(self) -> None:
        """Put the market back at ``reference`` (a no-op where the price cannot be moved)."""
        if self.can(MOVE_PRICE):
            self.move_price(self.reference)

    def move_price(self, price: float) -> None:
        """Move the market to ``price``; resting orders and stops it reaches trigger."""
        raise NotImplementedError

    def fill(self, client_order_id: str, qty: float) -> None:
        """Fill ``qty`` of the resting order ``client_order_id``."""
        raise NotImplementedError

    # -- faults ----------------------------------------------------------------------
    def go_down(self) -> None:
        """Make the broker unreachable (where the broker allows, in a way the worker only
        finds out by trying)."""
        raise NotImplementedError

    def come_back(self) -> None:
        """End ``go_down``: the broker is reachable again, with no record of what it missed."""
        raise NotImplementedError

    def restart(self) -> None:
        """Restart the broker (connections drop; orders and positions are kept)."""
        raise NotImplementedError

    def repeat_fill(self, client_order_id: str) -> None:
        """Send the newest fill of ``client_order_id`` again with the same execution id."""
        raise NotImplementedError

    def send_garbage(self) -> None:
        """Put malformed data on the broker's wire to the worker."""
        raise NotImplementedError

    def connected(self) -> bool:
        """True while the worker holds a live session with the broker."""
        return True

    # -- the broker's own record ---------------------------------------------------------
    def order(self, client_order_id: str) -> Optional[dict]:
        """The broker's record of one order: ``{"status", "filled"}`` (unsigned), or None."""
        raise NotImplementedError

    def times_received(self, client_order_id: str) -> int:
        """How many orders carrying ``client_order_id`` the broker has taken."""
        raise NotImplementedError

    def orders_received(self) -> int:
        """How many orders the broker has taken in all (any client order id)."""
        raise NotImplementedError

    def position(self) -> float:
        """The broker's signed position in ``epic``."""
        raise NotImplementedError

    def stops(self, client_order_id: str) -> tuple:
        """(stop loss, take profit) the broker holds for the bracket of ``client_order_id``."""
        raise NotImplementedError


class PaperRig(BrokerRig):
    """The paper broker: it lives inside its worker, with a constant price."""

    name = "paper"
    FAKE_CAN = frozenset({OUTAGE})
    qty = 1000.0
    reference = 1.0850  # the paper broker's EURUSD start price; volatility 0 keeps it there

    def __init__(self, workdir: Path, account: str):
        super().__init__(workdir, account)
        self.state_file = self.workdir / "paper-broker.sqlite"
        self.outage_file = self.workdir / "paper-outage"

    def document(self) -> dict:
        doc = paper_document(self.account, volatility=0.0, price_interval=0.05, order_timeout=3.0,
                             state_file=str(self.state_file), outage_file=str(self.outage_file),
                             max_retries=1000)
        doc["accountConfig"]["initial_balance"] = 1_000_000.0
        return doc

    def go_down(self) -> None:
        self.outage_file.touch()  # the paper broker checks this file on every turn of its loop

    def come_back(self) -> None:
        self.outage_file.unlink(missing_ok=True)

    def _rows(self) -> dict:
        if not self.state_file.exists():
            return {}
        db = sqlite3.connect(str(self.state_file))
        try:
            orders = {cid: json.loads(data) for cid, data in db.execute("SELECT client_order_id, data FROM orders")}
            book = db.execute("SELECT value FROM meta WHERE key = 'book'").fetchone()
            return {"orders": orders, "book": json.loads(book[0]) if book else {}}
        finally:
            db.close()

    def order(self, client_order_id: str) -> Optional[dict]:
        data = self._rows().get("orders", {}).get(client_order_id)
        if data is None:
            return None
        status = {"FILLED": FILLED, "CANCELLED": CANCELLED, "REJECTED": REJECTED}.get(data["status"], WORKING)
        return {"status": status, "filled": abs(data["filled_qty"])}

    def times_received(self, client_order_id: str) -> int:
        return int(client_order_id in self._rows().get("orders", {}))

    def orders_received(self) -> int:
        return len(self._rows().get("orders", {}))

    def position(self) -> float:
        positions = self._rows().get("book", {}).get("positions", {})
        return float(positions.get(self.epic, {}).get("qty", 0.0))

    def stops(self, client_order_id: str) -> tuple:
        stops = self._rows().get("book", {}).get("stops", {}).get(self.epic) or {}
        return stops.get("stop_loss"), stops.get("take_profit")


class IGRig(BrokerRig):
    """The IG simulator: REST and Lightstreamer (TLCP) on loopback."""

    name = "ig"
    FAKE_CAN = frozenset({MOVE_PRICE, OUTAGE, BROKER_RESTART, DUPLICATE_FILL, GARBAGE})
    qty = 2.0
    reference = 1.10000
    SILENT_OUTAGE = True  # REST answers 503 while the stream stays up
    SPREAD = 0.0001
    IG_ACCOUNT = "XYZ02"

    def start(self) -> "IGRig":
        self.sim = IGSimulator().start()
        self.broker_epic = ig_document(self.sim)["epicMapping"][self.epic]
        return self

    def stop(self) -> None:
        self.sim.stop()

    def document(self) -> dict:
        return ig_document(self.sim, account=self.account, ig_account=self.IG_ACCOUNT, order_timeout=3.0,
                           max_retries=1000)

    def move_price(self, price: float) -> None:
        half = self.SPREAD / 2
        self.sim.push_price(self.broker_epic, round(price - half, 6), round(price + half, 6))

    def connected(self) -> bool:
        return f"TRADE:{self.IG_ACCOUNT}" in self.sim.subscribed_items()

    def go_down(self) -> None:
        self.sim.refuse_rest = True  # every REST call answers 503; the stream stays up

    def come_back(self) -> None:
        self.sim.refuse_rest = False

    def restart(self) -> None:
        self.sim.restart()

    def repeat_fill(self, client_order_id: str) -> None:
        confirm = self.sim.confirms[deal_reference(client_order_id)]
        public = {k: v for k, v in confirm.items() if not k.startswith("_")}
        self.sim.push_trade_raw(self.IG_ACCOUNT, CONFIRMS=json.dumps(public))

    def send_garbage(self) -> None:
        self.sim.push_trade_raw(self.IG_ACCOUNT, CONFIRMS="{not json", OPU="[1, 2]", WOU="\x00\xff")

    def order(self, client_order_id: str) -> Optional[dict]:
        deal = self.sim.deals.get(deal_reference(client_order_id))
        return None if deal is None else {"status": deal["status"], "filled": deal["size"]}

    def times_received(self, client_order_id: str) -> int:
        return self.sim.deal_references[deal_reference(client_order_id)]

    def orders_received(self) -> int:
        return sum(self.sim.deal_references.values()) + sum(
            1 for method, path in self.sim.requests if method == "DELETE" and path == "/positions/otc")

    def position(self) -> float:
        return sum((p["size"] if p["direction"] == "BUY" else -p["size"])
                   for p in self.sim.positions.values() if p["epic"] == self.broker_epic)

    def stops(self, client_order_id: str) -> tuple:
        ref = deal_reference(client_order_id)
        for p in self.sim.positions.values():
            if p.get("dealReference") == ref:
                return p.get("stopLevel"), p.get("limitLevel")
        return None, None


class IBRig(BrokerRig):
    """The fake TWS, driven by the real ib_insync inside the worker."""

    name = "ib"
    FAKE_CAN = frozenset({MOVE_PRICE, MANUAL_FILL, OUTAGE, BROKER_RESTART, DUPLICATE_FILL, GARBAGE})
    qty = 20000.0
    reference = 1.10
    SILENT_OUTAGE = True  # a frozen TWS keeps its sockets open
    SYMBOL = "EUR"
    CLIENT_ID = 31

    def start(self) -> "IBRig":
        self.tws = FakeTWS(bar_interval=0.05, tick_interval=0.1).start()
        return self

    def stop(self) -> None:
        self.tws.stop()

    def document(self) -> dict:
        return ib_document(self.tws.port, account=self.account, client_id=self.CLIENT_ID, order_timeout=4.0,
                           max_retries=1000)

    def move_price(self, price: float) -> None:
        self.tws.set_price(self.SYMBOL, price)

    def fill(self, client_order_id: str, qty: float) -> None:
        self.tws.fill(client_order_id, qty)

    def go_down(self) -> None:
        self.tws.freeze()

    def come_back(self) -> None:
        if self.tws.frozen:
            self.tws.restart()

    def restart(self) -> None:
        self.tws.restart()

    def connected(self) -> bool:
        return self.CLIENT_ID in self.tws.connected_client_ids()

    def repeat_fill(self, client_order_id: str) -> None:
        self.tws.repeat_execution(client_order_id)

    def send_garbage(self) -> None:
        # An order status for an order id nobody placed, with numbers that are not numbers.
        self.tws.send_raw(3, "999999", "Filled", "lots", "none", "NaNx", "1", "0", "", "", "0", "")
        self.tws.send_raw("\x00\x01garbage", "", "\xff")

    def order(self, client_order_id: str) -> Optional[dict]:
        found = self.tws.order_by_ref(client_order_id)
        if found is None:
            return None
        status = {"Filled": FILLED, "Cancelled": CANCELLED, "ApiCancelled": CANCELLED,
                  "Inactive": REJECTED}.get(found.status, WORKING)
        return {"status": status, "filled": found.filled}

    def times_received(self, client_order_id: str) -> int:
        return self.tws.orders_with_ref(client_order_id)

    def orders_received(self) -> int:
        return self.tws.call(lambda: len(self.tws.placed))

    def position(self) -> float:
        return self.tws.position(self.SYMBOL)

    def stops(self, client_order_id: str) -> tuple:
        sl = self.tws.order_by_ref(f"{client_order_id}/SL")
        tp = self.tws.order_by_ref(f"{client_order_id}/TP")
        return (sl.aux_price if sl and not sl.done else None), (tp.lmt_price if tp and not tp.done else None)


class FIXRig(BrokerRig):
    """The QuickFIX acceptor behind a TCP relay; its FileLog is the broker's record."""

    name = "fix"
    FAKE_CAN = frozenset({MOVE_PRICE, MANUAL_FILL, OUTAGE, BROKER_RESTART, DUPLICATE_FILL, GARBAGE})
    epic = "ES_FUT"
    qty = 20.0
    reference = 100.0

    def start(self) -> "FIXRig":
        self.acceptor = QuickFixAcceptor(free_port(), self.workdir / "acceptor").start()
        self.relay = TcpRelay(self.acceptor.port)
        return self

    def stop(self) -> None:
        self.relay.close()
        self.acceptor.stop()

    def document(self) -> dict:
        return fix_document(self.relay.port, account=self.account, order_timeout=3.0, max_retries=1000)

    def move_price(self, price: float) -> None:
        self.acceptor.command(f"price {FIX_SYMBOL} {price:g}")

    def fill(self, client_order_id: str, qty: float) -> None:
        self.acceptor.command(f"fill {client_order_id} {qty:g}")

    def go_down(self) -> None:
        # Not a silent freeze: FIX resends every message of a session after a gap, so an
        # order written into a frozen line does reach the broker. Down means no session.
        self.relay.blocked.set()
        self.relay.cut()

    def come_back(self) -> None:
        self.relay.blocked.clear()

    def restart(self) -> None:
        # The broker ends the session and takes the next logon; its orders stay (the acceptor
        # keeps orders in memory, so a process restart would forget them, which no broker does).
        mark = self.acceptor.mark()
        self.acceptor.command("logout")
        self.acceptor.wait_line(lambda line: line == "LOGON", 60, since=mark, what="logon after logout")

    def connected(self) -> bool:
        return bool(self.relay.connections)

    def repeat_fill(self, client_order_id: str) -> None:
        self.acceptor.command(f"repeat {client_order_id}")

    def send_garbage(self) -> None:
        # A frame with a broken body length and checksum, then bytes that are not FIX at all.
        self.relay.inject(b"8=FIX.4.4\x019=5\x0135=8\x0111=x\x0110=000\x01" + b"\xff\x00garbage\x01\x01")

    def _messages(self) -> list[dict]:
        """Every message of the session as the acceptor's FileLog holds it, as tag -> value."""
        out = []
        for path in sorted((self.workdir / "acceptor" / "log").glob("*.messages.current.log")):
            for line in path.read_text(errors="replace").splitlines():
                _, _, raw = line.partition(" : ")
                out.append(dict(f.split("=", 1) for f in raw.split("\x01") if "=" in f))
        return out

    def _reports(self) -> list[dict]:
        """Every ExecutionReport the broker sent, oldest first."""
        return [m for m in self._messages() if m.get("35") == "8" and m.get("49") == "BROKER"]

    def _received(self) -> list[dict]:
        """Every NewOrderSingle the broker took (a session-level resend, PossDupFlag, is not a new one)."""
        return [m for m in self._messages() if m.get("35") == "D" and m.get("49") == "CLIENT" and m.get("43") != "Y"]

    def _of(self, client_order_id: str) -> list[dict]:
        """Reports about one order, following cancel/replace requests (new ClOrdID, 41 = the old)."""
        ids, out = {client_order_id}, []
        for r in self._reports():
            if r.get("11") in ids or r.get("41") in ids:
                ids.add(r.get("11"))
                out.append(r)
        return out

    def order(self, client_order_id: str) -> Optional[dict]:
        reports = self._of(client_order_id)
        if not reports:
            return None
        last = reports[-1]
        status = {"2": FILLED, "4": CANCELLED, "8": REJECTED}.get(last.get("39"), WORKING)
        return {"status": status, "filled": float(last.get("14") or 0.0)}

    def times_received(self, client_order_id: str) -> int:
        return sum(1 for m in self._received() if m.get("11") == client_order_id)

    def orders_received(self) -> int:
        return len(self._received())

    def position(self) -> float:
        total, seen = 0.0, set()
        for r in self._reports():
            if r.get("150") == "F" and r.get("55") == FIX_SYMBOL and r.get("17") not in seen:
                seen.add(r.get("17"))
                total += float(r["32"]) * (1 if r.get("54") == "1" else -1)
        return total

    def stops(self, client_order_id: str) -> tuple:
        levels = []
        for suffix, tag in (("/SL", "99"), ("/TP", "44")):
            reports = self._of(client_order_id + suffix)
            live = reports and reports[-1].get("39") not in ("2", "4", "8")
            levels.append(float(reports[-1][tag]) if live and tag in reports[-1] else None)
        return tuple(levels)


class KiteRig(LocalKiteRig, BrokerRig):
    """The local Kite Connect (REST and KiteTicker) behind the real kiteconnect; its rig
    methods live with the Kite tests (``tests/kite/rig.py``)."""


RIGS = {rig.name: rig for rig in (PaperRig, IGRig, IBRig, FIXRig, KiteRig)}


def wait_connected(rig: BrokerRig, timeout: float = 60) -> None:
    """Wait until the worker holds a session with the broker again."""
    wait_until(rig.connected, timeout, interval=0.05, what=f"{rig.name} worker connected to its broker")


def require(rig: BrokerRig, *capabilities: str) -> None:
    """Skip the scenario unless the rig's broker side can do every one of ``capabilities``."""
    for capability in capabilities:
        if not rig.can(capability):
            pytest.skip(f"needs {capability}: {CAPABILITY_WHY[capability]}")
