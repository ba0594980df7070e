"""The FIX worker against QuickFIX: logon, orders, market data."""
from __future__ import annotations

import pytest

from maotrade.messages import EngineToWorker as In
from maotrade.order import bracket_legs
from tests.kit import FIX_SYMBOL as SYMBOL


def test_logon_reports_init_and_connected(fix_worker):
    init = fix_worker.wait_type("init_result")
    assert init["ok"] is True
    assert init["account_info"]["account"] == "ACC-1"
    fix_worker.wait_type("connection", state="connected")
    fix_worker.acceptor.wait_line(lambda line: line == "LOGON")


def test_market_order_fills_in_lots_and_sums_partials(fix_worker):
    order = fix_worker.order("ES_FUT", 25)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    filled = fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    responses = [m for m in fix_worker.received[mark:] if m.get("type") == "order_event"
                 and m["order"]["client_order_id"] == order.client_order_id]
    fills = [m["fill"] for m in responses if m.get("fill")]
    assert [(f["qty"], f["price"]) for f in fills] == [(10, 100.0), (10, 100.25), (5, 100.5)]
    assert [m["order"]["status"] for m in responses] == ["ACCEPTED", "PARTIALLY_FILLED",
                                                         "PARTIALLY_FILLED", "FILLED"]
    assert filled["order"]["filled_qty"] == 25
    assert filled["order"]["avg_fill_price"] == pytest.approx(100.2)
    assert filled["order"]["broker_ref"].startswith("O")
    mark = fix_worker.request(In.PORTFOLIO_REQUEST)
    portfolio = fix_worker.wait_type("portfolio", since=mark)["portfolio"]
    assert [(p["epic"], p["epicBroker"], p["qty"]) for p in portfolio["positions"]] == [("ES_FUT", SYMBOL, 25)]
    assert portfolio["positions"][0]["avg_price"] == pytest.approx(100.2)


def test_limit_order_rests_then_fills_when_price_reaches_it(fix_worker):
    order = fix_worker.order("ES_FUT", 3, order_type="LIMIT", price=99.0)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    fix_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    mark = len(fix_worker.received)
    fix_worker.acceptor.command(f"price {SYMBOL} 98.5")
    filled = fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["fill"]["price"] == 99.0 and filled["fill"]["qty"] == 3


def test_stop_order_triggers_and_fills(fix_worker):
    order = fix_worker.order("ES_FUT", -2, order_type="STOP", price=95.0)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    fix_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    fix_worker.acceptor.command(f"price {SYMBOL} 94")
    filled = fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["fill"]["price"] == 94.0 and filled["order"]["filled_qty"] == -2


def test_partial_fills_by_hand_are_summed(fix_worker):
    order = fix_worker.order("ES_FUT", 8, order_type="LIMIT", price=90.0)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    fix_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    fix_worker.acceptor.command(f"fill {order.client_order_id} 3 89.5")
    part = fix_worker.wait_order(order.client_order_id, "PARTIALLY_FILLED", since=mark)
    assert part["order"]["filled_qty"] == 3
    fix_worker.acceptor.command(f"fill {order.client_order_id} 5 90")
    done = fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert done["order"]["filled_qty"] == 8
    assert done["order"]["avg_fill_price"] == pytest.approx((3 * 89.5 + 5 * 90) / 8)


def test_replace_moves_price_and_cancel_cancels(fix_worker):
    order = fix_worker.order("ES_FUT", 4, order_type="LIMIT", price=90.0)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    fix_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    order.price = 97.0
    mark = fix_worker.request(In.ORDER_STOP, order)
    amended = fix_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STOP)
    assert amended["order"]["status"] == "ACCEPTED" and amended["order"]["price"] == 97.0
    fix_worker.acceptor.command(f"price {SYMBOL} 96.9")
    filled = fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["fill"]["price"] == 97.0

    other = fix_worker.order("ES_FUT", 1, order_type="LIMIT", price=50.0)
    mark = fix_worker.request(In.ORDER_OPEN, other)
    fix_worker.wait_order(other.client_order_id, "ACCEPTED", since=mark)
    mark = fix_worker.request(In.ORDER_CANCEL, other)
    cancelled = fix_worker.wait_order(other.client_order_id, "CANCELLED", since=mark)
    assert cancelled["request"] == In.ORDER_CANCEL
    mark = fix_worker.request(In.ORDER_CANCEL, other)
    refused = fix_worker.wait_order(other.client_order_id, since=mark, request=In.ORDER_CANCEL)
    assert "already CANCELLED" in refused["refused"]


def test_broker_cancel_reject_is_reported_with_its_text(fix_worker):
    order = fix_worker.order("ES_FUT", 1, order_type="LIMIT", price=60.0)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    fix_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    order.price = 250.0  # outside the broker's price band: OrderCancelReject (35=9)
    mark = fix_worker.request(In.ORDER_STOP, order)
    refused = fix_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STOP)
    assert refused["refused"] == "price 250 outside band"
    assert refused["order"]["status"] == "ACCEPTED" and refused["order"]["price"] == 60.0
    fix_worker.acceptor.command(f"fill {order.client_order_id} 1")
    filled = fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["fill"]["price"] == 60.0  # the order kept its old price at the broker


def test_rejected_order_carries_the_broker_text(fix_worker):
    order = fix_worker.order("ES_FUT", 5000)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    rejected = fix_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert rejected["order"]["reason"] == "quantity 5000 exceeds limit 1000"
    bad = fix_worker.order("BAD_FUT", 1)
    mark = fix_worker.request(In.ORDER_OPEN, bad)
    rejected = fix_worker.wait_order(bad.client_order_id, "REJECTED", since=mark)
    assert rejected["order"]["reason"] == "unknown symbol BAD-SYMBOL"


def test_status_request_answers_known_and_unknown_orders(fix_worker):
    order = fix_worker.order("ES_FUT", 2)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    filled = fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    mark = fix_worker.request(In.ORDER_STATUS_REQUEST, order)
    status = fix_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STATUS_REQUEST)
    assert status["order"]["status"] == "FILLED"
    assert [f["exec_id"] for f in status["fills"]] == [filled["fill"]["exec_id"]]
    lost = fix_worker.order("ES_FUT", 1)
    mark = fix_worker.request(In.ORDER_STATUS_REQUEST, lost)
    answer = fix_worker.wait_order(lost.client_order_id, since=mark, request=In.ORDER_STATUS_REQUEST)
    assert answer.get("not_found") is True


def test_bracket_legs_are_plain_orders_the_engine_places_moves_and_cancels(fix_worker):
    # FIX has no native brackets: the engine sends the legs once the parent has filled,
    # moves one by amending its price, and cancels the other when one fills.
    order = fix_worker.order("ES_FUT", 2, stop_loss=95.0, take_profit=105.0)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    stop_leg, target_leg = bracket_legs(order)
    for leg in (stop_leg, target_leg):
        fix_worker.request(In.ORDER_OPEN, leg)
    sl = fix_worker.wait_order(stop_leg.client_order_id, "ACCEPTED", since=mark)
    tp = fix_worker.wait_order(target_leg.client_order_id, "ACCEPTED", since=mark)
    assert (sl["order"]["qty"], sl["order"]["order_type"], sl["order"]["price"]) == (-2, "STOP", 95.0)
    assert (tp["order"]["qty"], tp["order"]["order_type"], tp["order"]["price"]) == (-2, "LIMIT", 105.0)
    stop_leg.price = 96.0
    mark = fix_worker.request(In.ORDER_STOP, stop_leg)
    moved = fix_worker.wait_order(stop_leg.client_order_id, since=mark, request=In.ORDER_STOP)
    assert moved["order"]["price"] == 96.0
    fix_worker.acceptor.command(f"price {SYMBOL} 105.5")
    fix_worker.wait_order(target_leg.client_order_id, "FILLED", since=mark)
    fix_worker.request(In.ORDER_CANCEL, stop_leg)
    fix_worker.wait_order(stop_leg.client_order_id, "CANCELLED", since=mark)
    mark = fix_worker.request(In.PORTFOLIO_REQUEST)
    portfolio = fix_worker.wait_type("portfolio", since=mark)["portfolio"]
    assert [p["qty"] for p in portfolio["positions"]] == [0]
    assert portfolio["positions"][0]["realized_pnl"] == pytest.approx((105 - 100) * 2)
    assert portfolio["orders"] == []


def test_market_data_snapshot_and_updates_become_bars(fix_worker):
    request = {"action": "subscribe", "epic": "ES_FUT", "epicBroker": SYMBOL, "time_frame": 1}
    mark = fix_worker.request(In.MARKET_DATA_REQUEST, request=request)
    fix_worker.wait_type("market_data_response", since=mark, ok=True)
    first = fix_worker.wait_type("market_data", since=mark)
    assert first["epic"] == "ES_FUT" and first["close"] == 100.0
    for px in (101, 99.5, 100.75):
        fix_worker.acceptor.command(f"price {SYMBOL} {px}")
    bar = fix_worker.wait_for(lambda m: m.get("type") == "market_data" and m.get("completed")
                              and m["high"] >= 101, timeout=5, since=mark)
    assert bar["time_frame"] == 1 and bar["low"] <= bar["close"] <= bar["high"]


def test_unknown_market_data_symbol_is_refused_by_the_broker(fix_worker):
    request = {"action": "subscribe", "epic": "BAD_FUT", "epicBroker": "BAD-SYMBOL", "time_frame": 60}
    mark = fix_worker.request(In.MARKET_DATA_REQUEST, request=request)
    error = fix_worker.wait_type("error", since=mark)
    assert "BAD_FUT" in error["reason"] and "unknown symbol BAD-SYMBOL" in error["reason"]


def test_close_reduces_the_position_and_overclose_is_refused(fix_worker):
    order = fix_worker.order("ES_FUT", 5)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    too_much = fix_worker.order("ES_FUT", -6, action="close")
    mark = fix_worker.request(In.ORDER_CLOSE, too_much)
    refused = fix_worker.wait_order(too_much.client_order_id, "REJECTED", since=mark)
    assert "does not reduce the position of 5" in refused["order"]["reason"]
    close = fix_worker.order("ES_FUT", -5, action="close")
    mark = fix_worker.request(In.ORDER_CLOSE, close)
    closed = fix_worker.wait_order(close.client_order_id, "FILLED", since=mark)
    assert closed["fill"]["price"] == 100.0
    mark = fix_worker.request(In.ACCOUNT_INFO_REQUEST)
    info = fix_worker.wait_type("account_info", since=mark)["info"]
    assert info["realized_pnl"] == pytest.approx(0.0) and info["balance"] is None


def test_positions_fall_back_to_the_session_when_the_broker_rejects_the_request(tmp_path, acceptor):
    from tests.kit import fix_document
    from tests.kit import WorkerHarness
    document = fix_document(acceptor.port, request_positions=True, timeout=30.0)  # only 35=j can answer in time
    with WorkerHarness(document, tmp_path / "worker") as worker:
        worker.wait_type("connection", state="connected", timeout=20)
        order = worker.order("ES_FUT", 7)
        worker.request(In.ORDER_OPEN, order)
        worker.wait_order(order.client_order_id, "FILLED")
        mark = worker.request(In.PORTFOLIO_REQUEST)
        portfolio = worker.wait_type("portfolio", since=mark, timeout=5)["portfolio"]
        assert [p["qty"] for p in portfolio["positions"]] == [7]
        acceptor.wait_line(lambda line: line == "APP AN")  # QuickFIX answered it with 35=j
        mark = worker.request(In.PORTFOLIO_REQUEST)
        worker.wait_type("portfolio", since=mark, timeout=5)
        assert acceptor.count("APP AN") == 1  # not asked again once refused


def test_engine_heartbeat_stays_fast_with_a_long_fix_heartbeat(tmp_path, acceptor):
    from tests.kit import fix_document
    from tests.kit import WorkerHarness
    with WorkerHarness(fix_document(acceptor.port, heartbeat_interval=30), tmp_path / "worker") as worker:
        first = worker.wait_type("heartbeat", timeout=10)
        second = worker.wait_for(lambda m: m.get("type") == "heartbeat" and m is not first,
                                 timeout=5, what="second heartbeat")
        assert second["time"] - first["time"] <= 1500
