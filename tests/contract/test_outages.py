"""Contract: orders across broker outages and restarts.

An order (or a close) the broker never got ends REJECTED "never reached the broker" (or
is refused by the engine before routing, when it already knows the account is down), the
strategy is told, and it is never resent; orders working at a broker that restarts are
still known, in the same state, on both sides afterwards.
"""
from __future__ import annotations

import re

import pytest

from tests.contract.rigs import BROKER_RESTART, CANCELLED, FILLED, OUTAGE, WORKING, require, wait_connected
from tests.contract.trader import Trader
from tests.kit import wait_until

# The reason says the broker never got it: found unknown to it after the outage, or refused
# before anything was sent ("order not sent", "no close was sent").
NEVER_REACHED = re.compile(r"never reached the broker|not sent|no \w+ was sent")


# A scenario waits on a broker outage or a worker restart, then on the engine's recovery.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def trader(engine, market):
    t = Trader(engine, market)
    yield t
    if t.rig.can(OUTAGE):
        t.rig.come_back()
    t.flatten()


def go_down(trader: Trader, rig) -> None:
    """Take the broker down; where the worker notices at once, wait until the engine knows."""
    rig.go_down()
    if not rig.SILENT_OUTAGE:
        wait_until(lambda: trader.engine.account_status(rig.account)["state"] != "ready", 30, interval=0.05,
                   what="the engine to see the account down")


def assert_never_reached(trader: Trader, rig, cid: str) -> None:
    """While the broker is down ``cid`` is settled or told; once it is back, ``cid`` ends
    REJECTED as never reached, the strategy was told so, and the broker never got it."""
    # The strategy hears about the order before the broker comes back: never left NEW unsaid.
    first = trader.engine.wait_message(lambda m: m.get("type") == "order" and m.get("client_order_id") == cid
                                       and m.get("status") != "NEW", 30, what=f"any answer about {cid}")
    rig.come_back()
    wait_connected(rig)
    trader.ready()
    # A broker may be out of request allowance for a while after an outage (IG: per minute):
    # the engine keeps asking until it can.
    told = trader.wait(cid, "REJECTED", "FILLED", "CANCELLED", "EXPIRED", timeout=120)
    assert told["status"] == "REJECTED", told
    assert NEVER_REACHED.search(told["reason"]) or told.get("code") == "account_not_ready", told
    journaled = trader.journaled(cid)
    assert journaled["status"] == "REJECTED" and journaled["reason"] == told["reason"]
    assert rig.times_received(cid) == 0 and rig.order(cid) is None
    assert first["status"] in ("SUBMITTED", "REJECTED", "UNKNOWN"), first


def test_an_order_sent_while_the_broker_is_down_never_reaches_it_and_is_rejected(trader, rig):
    require(rig, OUTAGE)
    engine_before, broker_before = trader.position(), rig.position()
    go_down(trader, rig)
    cid = trader.open("down", rig.qty)
    assert_never_reached(trader, rig, cid)
    after = trader.open("back", rig.qty)  # the account trades again, and nothing was resent
    assert trader.wait(after)["status"] == "FILLED"
    trader.wait_positions(engine_before + rig.qty, broker_before + rig.qty)


def test_a_close_requested_while_the_broker_is_down_is_rejected_and_the_position_stays(trader, rig):
    require(rig, OUTAGE)
    opened = trader.open("held", rig.qty)
    assert trader.wait(opened)["status"] == "FILLED"
    engine_before, broker_before = trader.position(), rig.position()
    go_down(trader, rig)
    cid = trader.close("closedown", rig.qty)
    assert_never_reached(trader, rig, cid)
    trader.wait_positions(engine_before, broker_before)


def test_a_broker_restart_keeps_working_orders_known_on_both_sides(trader, rig):
    require(rig, BROKER_RESTART)
    cid = trader.open("keep", rig.qty, order_type="LIMIT", price=round(rig.reference * 0.9, 4))
    trader.wait(cid, "ACCEPTED")
    rig.restart()
    wait_connected(rig)
    trader.ready()
    assert trader.journaled(cid)["status"] == "ACCEPTED"
    assert rig.order(cid)["status"] == WORKING
    mark = trader.engine.mark()
    trader.engine.send("order_cancel", account=rig.account, client_order_id=cid)
    assert trader.wait(cid, "CANCELLED", since=mark)["filled_qty"] == 0
    assert rig.order(cid)["status"] == CANCELLED and rig.times_received(cid) == 1
    after = trader.open("afterrestart", rig.qty)
    assert trader.wait(after)["status"] == "FILLED" and rig.order(after)["status"] == FILLED
