"""Contract: brackets (a parent with stop loss and take profit) are the engine's.

The legs of a bracket are journaled as ``{parent}/SL`` and ``{parent}/TP`` whatever the
broker; a leg's fill is recorded under its id even when it happens while the account's
worker is being restarted; an amend of a bracket whose position is closed is refused.
"""
from __future__ import annotations

import psutil
import pytest

from maotrade.order import OrderStatus
from tests.contract.rigs import MOVE_PRICE, require
from tests.contract.trader import Trader, fills_qty
from tests.kit import wait_until


# A scenario waits on a broker outage or a worker restart, then on the engine's recovery.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def trader(engine, market):
    require(market, MOVE_PRICE)
    t = Trader(engine, market)
    yield t
    t.flatten()


def short_bracket(trader: Trader, rig) -> tuple[str, float, float]:
    """SELL at market with a stop loss 1% above and a take profit 1% below; return
    (parent id, engine position before, broker position before)."""
    engine_before, broker_before = trader.position(), rig.position()
    stop_loss, take_profit = round(rig.reference * 1.01, 4), round(rig.reference * 0.99, 4)
    parent = trader.open("brk", -rig.qty, stop_loss=stop_loss, take_profit=take_profit)
    assert trader.wait(parent)["status"] == "FILLED"
    trader.wait_positions(engine_before - rig.qty, broker_before - rig.qty)
    # Where the engine places the legs after the fill, they reach the broker a moment later;
    # the scenarios are about what happens once the bracket stands, so wait for it.
    wait_until(lambda: rig.stops(parent) == (pytest.approx(stop_loss), pytest.approx(take_profit)), 30,
               interval=0.05, what=f"the broker to hold the stops of {parent}")
    return parent, engine_before, broker_before


def assert_stopped_out(trader: Trader, rig, parent: str, engine_before: float, broker_before: float,
                       since: int) -> None:
    """The /SL leg is FILLED with its fill (told to the strategy and journaled), the /TP leg
    is CANCELLED, and the engine and the broker are both back where they were."""
    told = trader.wait(f"{parent}/SL", "FILLED", since=since)
    assert told["filled_qty"] == pytest.approx(rig.qty)  # buys back the short
    leg = trader.wait_journaled(f"{parent}/SL", OrderStatus.FILLED)
    assert fills_qty(leg) == pytest.approx(rig.qty) and len(leg["fills"]) >= 1
    assert trader.wait_journaled(f"{parent}/TP")["status"] == OrderStatus.CANCELLED
    trader.wait_positions(engine_before, broker_before)


def test_stop_loss_leg_fill_closes_the_position_and_cancels_the_take_profit(trader, rig):
    parent, engine_before, broker_before = short_bracket(trader, rig)
    mark = trader.engine.mark()
    rig.move_price(round(rig.reference * 1.015, 4))
    assert_stopped_out(trader, rig, parent, engine_before, broker_before, mark)


def test_stop_loss_leg_fill_after_a_worker_restart_is_recorded(trader, rig):
    parent, engine_before, broker_before = short_bracket(trader, rig)
    first = trader.engine.account_status(rig.account)
    psutil.Process(first["pid"]).kill()
    wait_until(lambda: (lambda s: s["state"] == "ready" and s["pid"] != first["pid"])(
        trader.engine.account_status(rig.account)), 90, interval=0.1, what="account ready on a new worker")
    mark = trader.engine.mark()
    rig.move_price(round(rig.reference * 1.015, 4))
    assert_stopped_out(trader, rig, parent, engine_before, broker_before, mark)


def test_amend_after_the_bracket_closed_is_refused_and_places_nothing(trader, rig):
    parent, engine_before, broker_before = short_bracket(trader, rig)
    rig.move_price(round(rig.reference * 1.015, 4))
    # The stop loss closed the position at the broker (how the engine recorded it is the
    # business of the scenarios above).
    wait_until(lambda: abs(rig.position() - broker_before) < 1e-9, 30, interval=0.05, what="broker flat")
    wait_until(lambda: abs(trader.position() - engine_before) < 1e-9, 30, interval=0.1, what="engine flat")
    # Where the engine places the legs, the take profit is withdrawn a moment after the stop
    # filled; only then is the bracket closed at the broker too.
    wait_until(lambda: rig.stops(parent) == (None, None), 30, interval=0.05,
               what=f"the broker to hold no leg of {parent}")
    rig.reset_price()
    received = rig.orders_received()
    mark = trader.engine.mark()
    trader.engine.send("order_stop", account=rig.account, client_order_id=parent,
                       stop_loss=round(rig.reference * 1.02, 4), take_profit=round(rig.reference * 0.995, 4))
    answer = trader.answer(parent, "order_stop", since=mark)
    assert answer.get("error"), f"an amend of a closed bracket was not refused: {answer}"
    assert rig.orders_received() == received, "the broker was sent new orders for a closed bracket"
    # Had the amend been placed, its take profit would now open a position nobody asked for.
    rig.move_price(round(rig.reference * 0.99, 4))
    assert rig.position() == pytest.approx(broker_before)
    assert trader.position() == pytest.approx(engine_before)
    journaled = trader.journaled(parent)
    assert (journaled["stop_loss"], journaled["take_profit"]) == (
        pytest.approx(round(rig.reference * 1.01, 4)), pytest.approx(round(rig.reference * 0.99, 4)))
