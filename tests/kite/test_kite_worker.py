"""The Kite Account Manager in a real worker process against the local Kite, through the
real, unmodified kiteconnect (requests for REST, KiteTicker on Twisted for the stream)."""
from __future__ import annotations

import datetime

from account_managers.kite.parsing import IST, tag_for
from maotrade.messages import EngineToWorker as In
from tests.kit import wait_until


def _filled(worker, epic, qty, **fields):
    order = worker.order(epic, qty, **fields)
    mark = worker.request(In.ORDER_OPEN, order)
    return order, worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=15)


def test_init_reports_margins_positions_and_frames(kite_worker):
    init = kite_worker.wait_type("init_result")
    info = init["account_info"]
    assert info["currency"] == "INR" and info["balance"] == 150_000.0
    assert set(info["segments"]) == {"equity", "commodity"}
    assert init["portfolio"] == {"positions": [], "orders": []}
    assert init["capabilities"]["bracket"] is False
    assert init["history_frames"][60] == "minute"


def test_market_order_fills_by_trade_id_and_shows_in_portfolio(kite_server, kite_worker):
    order, filled = _filled(kite_worker, "INFY", 5)
    assert filled["fill"]["qty"] == 5 and filled["fill"]["price"] == 1500.0
    [trade] = kite_server.snapshot()["trades"]
    assert filled["fill"]["exec_id"] == trade["trade_id"]
    assert kite_server.placed_tags[tag_for(order.client_order_id)] == 1
    mark = kite_worker.request(In.PORTFOLIO_REQUEST)
    [position] = kite_worker.wait_type("portfolio", since=mark)["portfolio"]["positions"]
    assert (position["epic"], position["epicBroker"], position["qty"], position["avg_price"]) == \
        ("INFY", "NSE:INFY", 5.0, 1500.0)
    mark = kite_worker.request(In.ACCOUNT_INFO_REQUEST)
    info = kite_worker.wait_type("account_info", since=mark)["info"]
    assert info["balance"] == 150_000.0 - 5 * 1500.0


def test_limit_order_works_then_fills_when_the_price_comes(kite_server, kite_worker):
    order = kite_worker.order("SBIN", -10, order_type="LIMIT", price=605.0)
    mark = kite_worker.request(In.ORDER_OPEN, order)
    accepted = kite_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    kite_server.set_price("NSE:SBIN", 606.0)
    filled = kite_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["broker_ref"] == accepted["broker_ref"]
    assert filled["avg_fill_price"] == 605.0
    assert kite_server.net_quantity("NSE:SBIN") == -10


def test_partial_fills_each_counted_once(kite_server, kite_worker):
    kite_server.call(setattr, kite_server, "partial_fills", 3)
    order, filled = _filled(kite_worker, "RELIANCE", 9)
    fills = [m["fill"] for m in kite_worker.received if m.get("type") == "order_event"
             and m["client_order_id"] == order.client_order_id and m.get("fill")]
    assert sorted(f["exec_id"] for f in fills) == sorted(t["trade_id"] for t in kite_server.snapshot()["trades"])
    assert sum(f["qty"] for f in fills) == 9 and filled["filled_qty"] == 9


def test_stop_and_take_profit_legs_as_close_orders(kite_server, kite_worker):
    _filled(kite_worker, "INFY", 4)
    stop = kite_worker.order("INFY", -4, order_type="STOP", price=1480.0, action="close",
                             client_order_id="leg-parent-1/SL")
    take = kite_worker.order("INFY", -4, order_type="LIMIT", price=1530.0, action="close",
                             client_order_id="leg-parent-1/TP")
    for leg in (stop, take):
        mark = kite_worker.request(In.ORDER_OPEN, leg)
        kite_worker.wait_order(leg.client_order_id, "ACCEPTED", since=mark)
    orders = {o["tag"]: o for o in kite_server.snapshot()["orders"]}
    assert orders[tag_for(stop.client_order_id)]["order_type"] == "SL-M"
    assert orders[tag_for(stop.client_order_id)]["status"] == "TRIGGER PENDING"
    assert tag_for(stop.client_order_id) != tag_for(take.client_order_id)
    mark = kite_worker.request(In.ORDER_CANCEL, take)
    kite_worker.wait_order(take.client_order_id, "CANCELLED", since=mark)
    kite_server.set_price("NSE:INFY", 1479.0)
    filled = kite_worker.wait_order(stop.client_order_id, "FILLED", since=mark)
    assert filled["avg_fill_price"] == 1479.0
    assert kite_server.net_quantity("NSE:INFY") == 0


def test_amend_moves_a_working_limit(kite_server, kite_worker):
    order = kite_worker.order("SBIN", 2, order_type="LIMIT", price=590.0)
    mark = kite_worker.request(In.ORDER_OPEN, order)
    kite_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    order.price = 598.0
    mark = kite_worker.request(In.ORDER_STOP, order)
    kite_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STOP)
    [row] = [o for o in kite_server.snapshot()["orders"] if o["tag"] == tag_for(order.client_order_id)]
    assert row["price"] == 598.0


def test_kite_refusal_is_rejected_with_its_message(kite_server, kite_worker):
    kite_server.fail_next_order("OrderException")
    order = kite_worker.order("INFY", 1)
    mark = kite_worker.request(In.ORDER_OPEN, order)
    rejected = kite_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "OrderException" in rejected["reason"]


def test_fractional_quantity_is_refused_before_kite(kite_server, kite_worker):
    order = kite_worker.order("INFY", 1.5)
    mark = kite_worker.request(In.ORDER_OPEN, order)
    rejected = kite_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "whole quantities" in rejected["reason"]
    assert not any(path.startswith("/orders/") for _, path in kite_server.requests)


def test_ticks_become_bars(kite_server, kite_worker):
    mark = kite_worker.request(In.MARKET_DATA_REQUEST, request={"epic": "INFY", "time_frame": 1,
                                                               "action": "subscribe"})
    assert kite_worker.wait_type("market_data_response", since=mark)["ok"] is True
    wait_until(lambda: kite_server.subscriptions().get(408065) == "quote", 10, what="quote subscription")
    for price in (1501.0, 1503.0, 1499.0):
        kite_server.set_price("NSE:INFY", price, volume=7)
    done = kite_worker.wait_for(lambda m: m.get("type") == "market_data" and m.get("completed")
                                and m.get("epic") == "INFY", timeout=10, what="completed bar", since=mark)
    assert done["time_frame"] == 1 and done["high"] >= done["low"] > 0
    forming = [m for m in kite_worker.received[mark:] if m.get("type") == "market_data"]
    assert {1501.0, 1503.0, 1499.0} <= {m["close"] for m in forming}


def test_parent_with_stops_is_refused_never_sent_without_them(kite_server, kite_worker):
    order = kite_worker.order("INFY", 2, stop_loss=1450.0, take_profit=1550.0)
    mark = kite_worker.request(In.ORDER_OPEN, order)
    rejected = kite_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "no brackets" in rejected["reason"]
    assert not any(path.startswith("/orders/") for _, path in kite_server.requests)


def test_history_request_is_answered_from_the_historical_api(kite_server, kite_worker):
    start = int(datetime.datetime(2024, 1, 8, 9, 15, tzinfo=IST).timestamp() * 1000)
    request = {"request_id": "h1", "epic": "INFY", "epicBroker": "NSE:INFY", "time_frame": 300,
               "start": start, "end": start + 3600 * 1000}
    mark = kite_worker.request(In.HISTORY_REQUEST, request=request)
    part = kite_worker.wait_type("history_data", since=mark, request_id="h1")
    assert part["done"] is True and not part.get("error")
    assert [b["date"] for b in part["bars"]] == [start + i * 300_000 for i in range(12)]
    assert (part["start"], part["end"]) == (start, start + 3600 * 1000)
    assert ("GET", "/instruments/historical/408065/5minute") in kite_server.requests
    mark = kite_worker.request(In.HISTORY_REQUEST, request={**request, "request_id": "h2", "time_frame": 7})
    refused = kite_worker.wait_type("history_data", since=mark, request_id="h2")
    assert "not offered" in refused["error"]
