"""The ccxt Account Manager in a real worker process, with the real ccxt library, against
the local exchange speaking Binance's REST and websocket protocols."""
from __future__ import annotations

import pytest

from maotrade.messages import EngineToWorker as In
from tests.ccxt.accounts import EPICS
from tests.ccxt.exchange_server import SPOT, USDM
from tests.kit import wait_until

BOTH = pytest.mark.parametrize("exchange", [SPOT, USDM], indirect=True)


def _epic(exchange):
    return EPICS[exchange.venue]


@BOTH
def test_connects_with_balances_and_time_frames(exchange, ccxt_worker):
    init = ccxt_worker.wait_type("init_result")
    info = init["account_info"]
    assert info["currency"] == "USDT" and info["balance"] == 10000.0
    assert info["assets"]["USDT"]["total"] == 10000.0
    assert init["data_frames"] == {1: "1s", 60: "1m"}
    # No native brackets: the engine places stop loss and take profit, amended as orders.
    assert not init["capabilities"].get("bracket") and init["capabilities"]["stop_amend"] is True


@BOTH
def test_market_order_fills_once_and_agrees_with_the_exchange(exchange, ccxt_worker):
    exchange.set_price(50000)
    order = ccxt_worker.order(_epic(exchange), 0.01)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    filled = ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    server_order = exchange.order_by_client_id(order.client_order_id)
    assert server_order is not None and server_order.status == "FILLED"
    [trade] = [t for t in exchange.trades if t["client_id"] == order.client_order_id]
    fills = [m for m in ccxt_worker.received[mark:] if m.get("type") == "order_event"
             and m["order"]["client_order_id"] == order.client_order_id and m.get("fill")]
    assert [f["fill"]["exec_id"] for f in fills] == [f"{server_order_symbol(exchange)}:{trade['id']}"]
    assert filled["order"]["avg_fill_price"] == 50000.0
    mark = ccxt_worker.request(In.PORTFOLIO_REQUEST)
    [position] = ccxt_worker.wait_type("portfolio", since=mark)["portfolio"]["positions"]
    assert position["qty"] == 0.01
    mark = ccxt_worker.request(In.ACCOUNT_INFO_REQUEST)
    info = ccxt_worker.wait_type("account_info", since=mark)["info"]
    if exchange.venue == SPOT:
        assert info["assets"]["USDT"]["total"] == float(exchange.balances["USDT"]) == 9500.0
        assert info["assets"]["BTC"]["total"] == float(exchange.balances["BTC"]) == 0.01
    else:
        assert position["avg_price"] == float(exchange.entry_price) == 50000.0
        assert position["leverage"] == 10.0 and position["margin"] == 50.0
        assert info["margin_used"] == 50.0


def server_order_symbol(exchange):
    return "BTC/USDT" if exchange.venue == SPOT else "BTC/USDT:USDT"


@BOTH
def test_filter_violation_is_refused_before_sending(exchange, ccxt_worker):
    exchange.set_price(50000)
    for qty, name in ((0.00015, "LOT_SIZE"), (0.0001, "MIN_NOTIONAL")):
        order = ccxt_worker.order(_epic(exchange), qty)
        mark = ccxt_worker.request(In.ORDER_OPEN, order)
        rejected = ccxt_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
        assert rejected["order"]["reason"].startswith(name)
    order = ccxt_worker.order(_epic(exchange), 0.01, order_type="LIMIT", price=49000.05)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    rejected = ccxt_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert rejected["order"]["reason"].startswith("PRICE_FILTER")
    assert not exchange.order_posts


@BOTH
def test_partial_fills_then_cancel_of_the_rest(exchange, ccxt_worker):
    exchange.set_price(50000)
    exchange.partial_next(0.25, 0.25)
    order = ccxt_worker.order(_epic(exchange), 0.02, order_type="LIMIT", price=49000.0)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    ccxt_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    exchange.set_price(48990)
    ccxt_worker.wait_order(order.client_order_id, "PARTIALLY_FILLED", since=mark)
    exchange.set_price(48980)
    wait_until(lambda: any(m.get("type") == "order_event" and m.get("fill")
                           and m["order"]["filled_qty"] == 0.01 for m in ccxt_worker.poll() or ccxt_worker.received),
               10, what="second partial fill")
    mark2 = ccxt_worker.request(In.ORDER_CANCEL, order)
    cancelled = ccxt_worker.wait_order(order.client_order_id, "CANCELLED", since=mark2)
    assert cancelled["order"]["filled_qty"] == 0.01
    assert float(exchange.order_by_client_id(order.client_order_id).executed) == 0.01


@BOTH
def test_duplicated_execution_reports_count_once(exchange, ccxt_worker):
    exchange.set_price(50000)
    exchange.duplicate_reports = True
    order = ccxt_worker.order(_epic(exchange), 0.01)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    ccxt_worker.request(In.PORTFOLIO_REQUEST)
    ccxt_worker.wait_type("portfolio", since=mark)
    fills = [m for m in ccxt_worker.received[mark:] if m.get("type") == "order_event" and m.get("fill")]
    assert len(fills) == 1


@BOTH
@pytest.mark.parametrize("status,code", [(503, 0), (408, -1007)])
def test_order_of_unknown_outcome_is_queried_not_resent(exchange, ccxt_worker, status, code):
    exchange.set_price(50000)
    exchange.fail_next("POST", "/order", status, code=code,
                       msg="Timeout waiting for response from backend server. Send status unknown; "
                           "execution status unknown." if code else "", after=True)
    order = ccxt_worker.order(_epic(exchange), 0.01)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    filled = ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=15)
    assert filled["order"]["filled_qty"] == 0.01
    assert exchange.order_posts[order.client_order_id] == 1
    wait_until(lambda: any(m == "GET" and p.endswith("/order") for m, p, _ in exchange.requests), 10,
               what="the order looked up by client order id")
    assert exchange.order_posts[order.client_order_id] == 1


@BOTH
def test_dropped_websocket_resubscribes_and_catches_up_by_rest(exchange, ccxt_worker):
    exchange.set_price(50000)
    order = ccxt_worker.order(_epic(exchange), 0.01, order_type="LIMIT", price=49000.0)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    ccxt_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    subscriptions = exchange.user_subscriptions
    exchange.drop_streams()
    exchange.set_price(48900)  # fills while no user stream is connected
    ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=15)
    wait_until(lambda: exchange.user_subscriptions > subscriptions, 15, what="user stream resubscribed")


@BOTH
def test_429_with_retry_after_pauses_requests(exchange, ccxt_worker):
    path = "/account"
    exchange.fail_next("GET", path, 429, code=-1003, msg="Too many requests", headers={"Retry-After": "1"})
    mark = ccxt_worker.request(In.ACCOUNT_INFO_REQUEST)
    info = ccxt_worker.wait_type("account_info", since=mark, timeout=15)["info"]
    assert info["balance"] == 10000.0
    hits = [t for m, p, t in exchange.requests if m == "GET" and p.endswith(path)]
    assert hits[-1] - hits[-2] >= 0.95  # the retry waited for Retry-After


@BOTH
def test_order_answered_429_is_rejected_and_the_gate_holds_the_next_request(exchange, ccxt_worker):
    exchange.set_price(50000)
    exchange.fail_next("POST", "/order", 429, code=-1003, msg="Too many requests", headers={"Retry-After": "1"})
    order = ccxt_worker.order(_epic(exchange), 0.01)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    rejected = ccxt_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "rate limit" in rejected["order"]["reason"]
    refused_at = exchange.requests[-1][2]
    mark = ccxt_worker.request(In.ACCOUNT_INFO_REQUEST)
    ccxt_worker.wait_type("account_info", since=mark, timeout=15)
    assert exchange.requests[-1][2] - refused_at >= 0.95
    assert order.client_order_id not in exchange.order_posts  # answered 429 before the book


@BOTH
def test_bars_stream_from_trades(exchange, ccxt_worker):
    mark = ccxt_worker.request(In.MARKET_DATA_REQUEST, request={"action": "subscribe", "epic": _epic(exchange),
                                                                "time_frame": 1})
    ccxt_worker.wait_type("market_data_response", since=mark, ok=True)
    wait_until(exchange.streams_subscribed, 10, what="trade stream subscription")

    def bar():
        exchange.set_price(50000 + len(ccxt_worker.received) % 7)
        ccxt_worker.poll()
        return any(m.get("type") == "market_data" and m.get("completed") for m in ccxt_worker.received[mark:])
    wait_until(bar, 10, interval=0.2, what="a completed 1s bar")


@BOTH
def test_stop_close_is_a_reduce_only_stop(exchange, ccxt_worker):
    exchange.set_price(50000)
    buy = ccxt_worker.order(_epic(exchange), 0.01)
    mark = ccxt_worker.request(In.ORDER_OPEN, buy)
    ccxt_worker.wait_order(buy.client_order_id, "FILLED", since=mark)
    stop = ccxt_worker.order(_epic(exchange), -0.01, order_type="STOP", price=49000.0, action="close")
    mark = ccxt_worker.request(In.ORDER_OPEN, stop)
    ccxt_worker.wait_order(stop.client_order_id, "ACCEPTED", since=mark)
    exchange.set_price(48990)
    ccxt_worker.wait_order(stop.client_order_id, "FILLED", since=mark)
    if exchange.venue == USDM:
        assert exchange.position_qty == 0
    else:
        assert exchange.balances["BTC"] == 0


@BOTH
def test_clock_drift_is_resynchronised_and_the_order_sent_once(exchange, ccxt_worker):
    exchange.set_price(50000)
    exchange.clock_offset_ms = 60_000  # our clock is now a minute behind the exchange's: -1021
    order = ccxt_worker.order(_epic(exchange), 0.01)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=15)
    assert any(p.endswith("/time") for _, p, _ in exchange.requests)
    assert exchange.order_posts[order.client_order_id] == 1  # the -1021 refusal never reached the book
    assert len([o for o in exchange.orders.values() if o.client_id == order.client_order_id]) == 1


@BOTH
def test_a_restarted_worker_reports_the_same_fills_by_trade_id(exchange, ccxt_worker, tmp_path):
    exchange.set_price(50000)
    order = ccxt_worker.order(_epic(exchange), 0.01)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    first = ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    exec_ids = [f["exec_id"] for f in [first.get("fill")] if f]
    ccxt_worker.kill()
    ccxt_worker.start()
    ccxt_worker.wait_type("init_result", timeout=30, since=mark)
    fresh = order.__class__.from_dict({**order.to_dict(), "status": "SUBMITTED", "fills": []})
    mark = ccxt_worker.request(In.ORDER_STATUS_REQUEST, fresh)
    answer = ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=15,
                                    request=In.ORDER_STATUS_REQUEST)
    assert exec_ids and [f["exec_id"] for f in answer["fills"]] == exec_ids


@BOTH
def test_amend_moves_a_working_limit_and_it_fills_at_the_new_price(exchange, ccxt_worker):
    exchange.set_price(50000)
    order = ccxt_worker.order(_epic(exchange), 0.01, order_type="LIMIT", price=48000.0)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    ccxt_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    order.price = 49500.0
    mark = ccxt_worker.request(In.ORDER_STOP, order)
    amended = ccxt_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STOP)
    assert amended.get("refused") is None and amended["order"]["status"] == "ACCEPTED"
    exchange.set_price(49400)
    filled = ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["order"]["avg_fill_price"] == 49500.0
    live = [o for o in exchange.orders.values() if o.client_id == order.client_order_id]
    assert [o.status for o in live][-1] == "FILLED" and float(live[-1].price) == 49500.0


@BOTH
def test_an_unreachable_exchange_is_reconnected_and_caught_up(exchange, ccxt_worker):
    exchange.set_price(50000)
    order = ccxt_worker.order(_epic(exchange), 0.02, order_type="LIMIT", price=49000.0)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    ccxt_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    exchange.go_down()
    exchange.fill_order(order.client_order_id, 0.01)  # filled while the worker cannot see it
    exchange.come_back()
    partial = ccxt_worker.wait_order(order.client_order_id, "PARTIALLY_FILLED", since=mark, timeout=20)
    assert partial["order"]["filled_qty"] == 0.01


@BOTH
def test_garbage_on_the_user_stream_loses_nothing(exchange, ccxt_worker):
    exchange.set_price(50000)
    exchange.send_garbage()
    order = ccxt_worker.order(_epic(exchange), 0.01)
    mark = ccxt_worker.request(In.ORDER_OPEN, order)
    ccxt_worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=15)
    exchange.repeat_fill(order.client_order_id)
    mark = ccxt_worker.request(In.PORTFOLIO_REQUEST)
    ccxt_worker.wait_type("portfolio", since=mark)
    fills = [m for m in ccxt_worker.received if m.get("type") == "order_event" and m.get("fill")
             and m["order"]["client_order_id"] == order.client_order_id]
    assert len(fills) == 1


def test_a_bracket_legs_level_is_put_on_the_tick_and_a_strategy_price_is_not():
    from account_managers.ccxt import parsing
    from maotrade.order import BaseOrder
    market = {"symbol": "BTC/USDT:USDT", "precision": {"price": 0.1, "amount": 0.001}, "limits": {}}
    leg = BaseOrder(client_order_id="p/SL", account="1", epic="BTCUSD_PERP", epicBroker="BTC/USDT:USDT",
                    qty=-0.01, order_type="STOP", price=51536.4321, parent="p", leg="SL", action="close")
    parsing.leg_on_tick(leg, market)
    assert leg.price == 51536.4 and not parsing.filter_violation(leg, market, 51600.0)
    own = BaseOrder(client_order_id="own", account="1", epic="BTCUSD_PERP", epicBroker="BTC/USDT:USDT",
                    qty=0.01, order_type="LIMIT", price=51536.4321)
    parsing.leg_on_tick(own, market)
    assert own.price == 51536.4321 and "PRICE_FILTER" in parsing.filter_violation(own, market, 51600.0)
