"""Contract: the life of ordinary orders, the same on every broker.

Each scenario runs through the real engine (``maotrade start`` in a subprocess) with a
bus client as the strategy, and checks what the strategy was told, what the journal holds
(``orders_request``) and what the broker's own record says.
"""
from __future__ import annotations

import pytest

from tests.contract.rigs import CANCELLED, DUPLICATE_FILL, FILLED, GARBAGE, MANUAL_FILL, MOVE_PRICE, WORKING, require
from tests.contract.trader import Trader, fills_qty
from tests.kit import wait_until


@pytest.fixture
def trader(engine, market):
    t = Trader(engine, market)
    yield t
    t.flatten()


def test_connect_and_sync_shows_the_account_ready_with_the_brokers_position(engine, rig, trader):
    [account] = [a for a in engine.welcome["accounts"] if a["account"] == rig.account]
    assert account["broker"] and rig.epic in account["epics"]
    status = trader.ready()
    assert status["state"] == "ready" and status["pid"]
    assert trader.position() == pytest.approx(rig.position())
    answer = engine.client.request({"type": "account_info_request", "v": 1, "account": rig.account},
                                   "account_info", timeout=30)
    assert answer["account"] == rig.account and answer["info"].get("currency")


def test_market_order_fills_once_and_engine_and_broker_agree(trader, rig):
    engine_before, broker_before = trader.position(), rig.position()
    cid = trader.open("mkt", rig.qty)
    told = trader.wait(cid)
    assert told["status"] == "FILLED", told
    assert told["filled_qty"] == pytest.approx(rig.qty) and told["avg_fill_price"] > 0
    journaled = trader.journaled(cid)
    assert journaled["status"] == "FILLED" and fills_qty(journaled) == pytest.approx(rig.qty)
    assert rig.order(cid) == {"status": FILLED, "filled": pytest.approx(rig.qty)}
    assert rig.times_received(cid) == 1
    trader.wait_positions(engine_before + rig.qty, broker_before + rig.qty)


def test_limit_order_rests_at_the_broker_until_cancelled(trader, rig):
    cid = trader.open("lmt", rig.qty, order_type="LIMIT", price=round(rig.reference * 0.9, 4))
    assert trader.wait(cid, "ACCEPTED")["filled_qty"] == 0
    assert rig.order(cid)["status"] == WORKING
    mark = trader.engine.mark()
    trader.engine.send("order_cancel", account=rig.account, client_order_id=cid)
    assert trader.wait(cid, "CANCELLED", since=mark)["filled_qty"] == 0
    assert trader.journaled(cid)["status"] == "CANCELLED"
    assert rig.order(cid)["status"] == CANCELLED and rig.order(cid)["filled"] == 0
    assert rig.times_received(cid) == 1


def test_limit_order_fills_at_its_price_when_the_market_reaches_it(trader, rig):
    require(rig, MOVE_PRICE)
    engine_before, broker_before = trader.position(), rig.position()
    limit = round(rig.reference * 0.99, 4)
    cid = trader.open("lmtf", rig.qty, order_type="LIMIT", price=limit)
    trader.wait(cid, "ACCEPTED")
    rig.move_price(round(rig.reference * 0.985, 4))
    told = trader.wait(cid)
    assert told["status"] == "FILLED" and told["avg_fill_price"] <= limit + 1e-9
    assert fills_qty(trader.journaled(cid)) == pytest.approx(rig.qty)
    assert rig.order(cid)["status"] == FILLED
    trader.wait_positions(engine_before + rig.qty, broker_before + rig.qty)


def test_stop_order_rests_then_fills_when_the_market_crosses_it(trader, rig):
    require(rig, MOVE_PRICE)
    engine_before, broker_before = trader.position(), rig.position()
    stop = round(rig.reference * 1.01, 4)
    cid = trader.open("stp", rig.qty, order_type="STOP", price=stop)
    trader.wait(cid, "ACCEPTED")
    assert rig.order(cid)["status"] == WORKING
    rig.move_price(round(rig.reference * 1.015, 4))
    told = trader.wait(cid)
    assert told["status"] == "FILLED" and told["avg_fill_price"] >= stop - 1e-9
    assert rig.order(cid)["status"] == FILLED
    trader.wait_positions(engine_before + rig.qty, broker_before + rig.qty)


def test_partial_fills_reach_the_strategy_one_by_one_and_add_up(trader, rig):
    require(rig, MANUAL_FILL)
    engine_before, broker_before = trader.position(), rig.position()
    cid = trader.open("part", rig.qty, order_type="LIMIT", price=round(rig.reference * 0.9, 4))
    trader.wait(cid, "ACCEPTED")
    first = rig.qty / 4
    rig.fill(cid, first)
    partial = trader.wait(cid, "PARTIALLY_FILLED")
    assert partial["filled_qty"] == pytest.approx(first)
    assert [f["qty"] for f in partial["fills"]] == [pytest.approx(first)]
    rig.fill(cid, rig.qty - first)
    done = trader.wait(cid, "FILLED")
    assert done["filled_qty"] == pytest.approx(rig.qty)
    journaled = trader.journaled(cid)
    assert sorted(abs(f["qty"]) for f in journaled["fills"]) == pytest.approx(sorted([first, rig.qty - first]))
    assert len({f["exec_id"] for f in journaled["fills"]}) == 2
    assert rig.order(cid) == {"status": FILLED, "filled": pytest.approx(rig.qty)}
    trader.wait_positions(engine_before + rig.qty, broker_before + rig.qty)


def test_close_flattens_the_position_at_the_broker_too(trader, rig):
    opened = trader.open("toclose", -rig.qty)
    assert trader.wait(opened)["status"] == "FILLED"
    engine_before, broker_before = trader.position(), rig.position()
    cid = trader.close("close", rig.qty)
    told = trader.wait(cid)
    assert told["status"] == "FILLED" and told["action"] == "close", told
    assert told["filled_qty"] == pytest.approx(rig.qty)  # buys back what the sell opened
    assert trader.journaled(cid)["status"] == "FILLED"
    trader.wait_positions(engine_before + rig.qty, broker_before + rig.qty)


def test_amend_of_stop_loss_and_take_profit_reaches_the_broker(trader, rig):
    ref = rig.reference
    cid = trader.open("amend", rig.qty, stop_loss=round(ref * 0.95, 4), take_profit=round(ref * 1.05, 4))
    assert trader.wait(cid)["status"] == "FILLED"
    wait_until(lambda: rig.stops(cid) == (pytest.approx(round(ref * 0.95, 4)), pytest.approx(round(ref * 1.05, 4))),
               30, interval=0.05, what=f"the broker to hold the stops of {cid}")  # legs may follow the fill
    mark = trader.engine.mark()
    new_sl, new_tp = round(ref * 0.97, 4), round(ref * 1.03, 4)
    trader.engine.send("order_stop", account=rig.account, client_order_id=cid, stop_loss=new_sl, take_profit=new_tp)
    answer = trader.answer(cid, "order_stop", since=mark)
    assert not answer.get("error"), answer
    assert (answer["stop_loss"], answer["take_profit"]) == (pytest.approx(new_sl), pytest.approx(new_tp))
    journaled = trader.journaled(cid)
    assert (journaled["stop_loss"], journaled["take_profit"]) == (pytest.approx(new_sl), pytest.approx(new_tp))
    wait_until(lambda: rig.stops(cid) == (pytest.approx(new_sl), pytest.approx(new_tp)), 30, interval=0.05,
               what=f"the broker to hold the amended stops of {cid}: has {rig.stops(cid)}")


def test_the_list_form_of_orders_request_carries_every_fill_of_filled_orders(trader, rig):
    cid = trader.open("list", rig.qty)
    assert trader.wait(cid)["status"] == "FILLED"
    single = trader.journaled(cid)
    assert fills_qty(single) == pytest.approx(rig.qty)
    [listed] = [o for o in trader.engine.orders(account=rig.account, status="FILLED") if o["client_order_id"] == cid]
    assert listed["fills"] == single["fills"]


def test_a_fill_the_broker_sends_twice_is_counted_once(trader, rig):
    require(rig, DUPLICATE_FILL)
    engine_before, broker_before = trader.position(), rig.position()
    cid = trader.open("dup", rig.qty)
    assert trader.wait(cid)["status"] == "FILLED"
    fills_before = trader.journaled(cid)["fills"]
    rig.repeat_fill(cid)
    # An order sent after the duplicate is answered after it: the duplicate has been handled.
    after = trader.open("dupafter", rig.qty)
    assert trader.wait(after)["status"] == "FILLED"
    journaled = trader.journaled(cid)
    assert journaled["fills"] == fills_before and journaled["filled_qty"] == pytest.approx(rig.qty)
    trader.wait_positions(engine_before + 2 * rig.qty, broker_before + 2 * rig.qty)
    assert trader.engine.account_status(rig.account)["state"] == "ready"


def test_garbage_from_the_broker_is_refused_and_nothing_is_corrupted(trader, rig):
    require(rig, GARBAGE)
    cid = trader.open("pre", rig.qty)
    assert trader.wait(cid)["status"] == "FILLED"
    before = trader.journaled(cid)
    engine_before = trader.position()
    rig.send_garbage()
    after = trader.open("post", rig.qty)  # the account still trades, and its record is intact
    assert trader.wait(after)["status"] == "FILLED"
    assert trader.journaled(cid) == before
    trader.wait_positions(engine_before + rig.qty, rig.position())
    assert trader.position() == pytest.approx(rig.position())
    assert trader.engine.process.poll() is None
