"""The IG Account Manager in a real worker process against the IG simulator, with the
real ``requests`` and ``lightstreamer-client-lib`` on real sockets."""
from __future__ import annotations

from maotrade.messages import EngineToWorker as In
from tests.kit import IG_EPICS as EPICS, ig_document
from tests.kit import WorkerHarness, wait_until

EURUSD = EPICS["EURUSD"]


def test_login_switches_account_and_reports_account_and_frames(sim, ig_worker):
    init = ig_worker.wait_type("init_result")
    assert init["account_info"]["account"] == "XYZ02"  # login landed on ABC01, then switched
    assert init["account_info"]["balance"] == 10000.0
    assert init["account_info"]["currency"] == "GBP"
    assert init["history_frames"] == {1: "MINUTE", 5: "MINUTE_5", 60: "HOUR", -1: "DAY"}
    assert init["data_frames"] == {300: "5MINUTE", 60: "1MINUTE", 1: "SECOND"}
    assert ("PUT", "/session") in sim.requests
    assert "TRADE:XYZ02" in wait_until(sim.subscribed_items, 5, what="TRADE subscription")


def test_wrong_password_stops_the_worker_for_good(sim, tmp_path):
    doc = ig_document(sim)
    doc["accountConfig"]["password"] = "wrong-password"
    with WorkerHarness(doc, tmp_path) as worker:
        gone = worker.wait_type("account_disconnected", timeout=20)
        assert "error.security.invalid-details" in gone["reason"]
        assert "wrong-password" not in gone["reason"]
        worker.process.join(10)
        assert worker.process.exitcode == 3


def test_market_order_fills_and_shows_in_portfolio_and_account(sim, ig_worker):
    order = ig_worker.order("EURUSD", 2)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    filled = ig_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["fill"]["qty"] == 2 and filled["fill"]["price"] == 1.0851  # bought at the offer
    assert sim.deal_references[order.client_order_id] == 1
    mark = ig_worker.request(In.PORTFOLIO_REQUEST)
    portfolio = ig_worker.wait_type("portfolio", since=mark)["portfolio"]
    [position] = portfolio["positions"]
    assert (position["epic"], position["epicBroker"], position["qty"]) == ("EURUSD", EURUSD, 2.0)
    assert position["avg_price"] == 1.0851 and position["market_price"] == 1.085
    mark = ig_worker.request(In.ACCOUNT_INFO_REQUEST)
    info = ig_worker.wait_type("account_info", since=mark)["info"]
    assert abs(info["unrealized_pnl"] - (1.085 - 1.0851) * 2) < 1e-9
    assert abs(info["margin_used"] - 2 * 1.08505 * 0.05) < 1e-9


def test_rejected_deal_reaches_rejected_with_igs_reason(sim, ig_worker):
    sim.reject_next_deal("MARKET_CLOSED")
    order = ig_worker.order("GBPUSD", -1)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    rejected = ig_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "MARKET_CLOSED" in rejected["order"]["reason"]
    assert sim.deal_references[order.client_order_id] == 1


def _open(worker, epic, qty, **fields):
    order = worker.order(epic, qty, **fields)
    mark = worker.request(In.ORDER_OPEN, order)
    worker.wait_order(order.client_order_id, "FILLED", since=mark)
    return order


def _positions(worker):
    mark = worker.request(In.PORTFOLIO_REQUEST)
    return {p["epic"]: p for p in worker.wait_type("portfolio", since=mark)["portfolio"]["positions"]}


def test_partial_then_full_close(sim, ig_worker):
    _open(ig_worker, "EURUSD", 3)
    sim.push_price(EURUSD, 1.0900, 1.0901)
    part = ig_worker.order("EURUSD", -1)
    mark = ig_worker.request(In.ORDER_CLOSE, part)
    closed = ig_worker.wait_order(part.client_order_id, "FILLED", since=mark)
    assert closed["fill"]["qty"] == 1 and closed["fill"]["price"] == 1.09  # sold at the bid
    assert _positions(ig_worker)["EURUSD"]["qty"] == 2
    rest = ig_worker.order("EURUSD", -2)
    mark = ig_worker.request(In.ORDER_CLOSE, rest)
    ig_worker.wait_order(rest.client_order_id, "FILLED", since=mark)
    assert _positions(ig_worker) == {}
    mark = ig_worker.request(In.ACCOUNT_INFO_REQUEST)
    info = ig_worker.wait_type("account_info", since=mark)["info"]
    assert abs(info["realized_pnl"] - (1.09 - 1.0851) * 3) < 1e-9
    assert abs(info["balance"] - (10000 + (1.09 - 1.0851) * 3)) < 1e-9


def test_close_without_position_is_rejected_with_reason(sim, ig_worker):
    close = ig_worker.order("GBPUSD", -1)
    mark = ig_worker.request(In.ORDER_CLOSE, close)
    rejected = ig_worker.wait_order(close.client_order_id, "REJECTED", since=mark)
    assert "no open long position" in rejected["order"]["reason"]


def test_stop_and_limit_on_open_then_amended(sim, ig_worker):
    order = _open(ig_worker, "EURUSD", 1, stop_loss=1.08, take_profit=1.10)
    [deal] = list(sim.positions.values())
    assert (deal["stopLevel"], deal["limitLevel"]) == (1.08, 1.10)
    order.stop_loss, order.take_profit = 1.081, 1.095
    mark = ig_worker.request(In.ORDER_STOP, order)
    answer = ig_worker.wait_order(order.client_order_id, since=mark, request="order_stop")
    assert "refused" not in answer
    assert (deal["stopLevel"], deal["limitLevel"]) == (1.081, 1.095)
    order.stop_loss = 1.09  # above the bid of a long: IG refuses
    mark = ig_worker.request(In.ORDER_STOP, order)
    refused = ig_worker.wait_order(order.client_order_id, since=mark, request="order_stop")
    assert "ATTACHED_ORDER_LEVEL_ERROR" in refused["refused"]
    assert deal["stopLevel"] == 1.081


def test_working_order_placed_cancelled_and_another_filled(sim, ig_worker):
    limit = ig_worker.order("FTSE", 1, order_type="LIMIT", price=7400.0)
    mark = ig_worker.request(In.ORDER_OPEN, limit)
    accepted = ig_worker.wait_order(limit.client_order_id, "ACCEPTED", since=mark)
    assert accepted["order"]["broker_ref"] in sim.working
    mark = ig_worker.request(In.PORTFOLIO_REQUEST)
    [working] = ig_worker.wait_type("portfolio", since=mark)["portfolio"]["orders"]
    assert working["client_order_id"] == limit.client_order_id and working["price"] == 7400.0
    mark = ig_worker.request(In.ORDER_CANCEL, limit)
    ig_worker.wait_order(limit.client_order_id, "CANCELLED", since=mark)
    assert sim.working == {}
    stop = ig_worker.order("FTSE", -2, order_type="STOP", price=7450.0)
    mark = ig_worker.request(In.ORDER_OPEN, stop)
    ig_worker.wait_order(stop.client_order_id, "ACCEPTED", since=mark)
    sim.push_price("IX.D.FTSE.DAILY.IP", 7449.0, 7450.0)
    filled = ig_worker.wait_order(stop.client_order_id, "FILLED", since=mark)
    assert filled["fill"]["qty"] == 2 and filled["fill"]["price"] == 7449.0
    assert _positions(ig_worker)["FTSE"]["qty"] == -2


def test_bars_for_several_epics_and_time_frames(sim, ig_worker):
    for epic, frame in (("EURUSD", 60), ("EURUSD", 300), ("GBPUSD", 1)):
        mark = ig_worker.request(In.MARKET_DATA_REQUEST, request={
            "action": "subscribe", "epic": epic, "epicBroker": EPICS[epic], "time_frame": frame})
        ig_worker.wait_type("market_data_response", since=mark, ok=True)
    wanted = {f"CHART:{EURUSD}:1MINUTE", f"CHART:{EURUSD}:5MINUTE", f"CHART:{EPICS['GBPUSD']}:SECOND"}
    wait_until(lambda: wanted <= sim.subscribed_items(), 5, what="CHART subscriptions")
    mark = len(ig_worker.received)
    base = 1_700_000_100_000  # a 5-minute boundary
    sim.push_price(EURUSD, 1.1000, 1.1002, base)
    sim.push_price(EURUSD, 1.1010, 1.1012, base + 20_000)
    sim.push_price(EURUSD, 1.0990, 1.0992, base + 40_000)
    sim.push_price(EURUSD, 1.1004, 1.1006, base + 61_000)  # completes the first minute
    sim.push_price(EPICS["GBPUSD"], 1.2700, 1.2702, base)
    sim.push_price(EPICS["GBPUSD"], 1.2710, 1.2712, base + 1_000)
    minute = ig_worker.wait_for(lambda m: m.get("type") == "market_data" and m["epic"] == "EURUSD"
                                and m["time_frame"] == 60 and m["completed"], since=mark, what="1-minute bar")
    assert minute["date"] == base
    assert (minute["open"], minute["high"], minute["low"], minute["close"]) == (1.1001, 1.1011, 1.0991, 1.0991)
    assert minute["volume"] == 3
    five = ig_worker.wait_for(lambda m: m.get("type") == "market_data" and m["time_frame"] == 300
                              and m["close"] == 1.1005, since=mark, what="forming 5-minute bar")
    assert five["completed"] is False and five["date"] == base and five["high"] == 1.1011
    second = ig_worker.wait_for(lambda m: m.get("type") == "market_data" and m["epic"] == "GBPUSD"
                                and m["completed"], since=mark, what="1-second bar")
    assert second["time_frame"] == 1 and second["close"] == 1.2701
    mark = ig_worker.request(In.MARKET_DATA_REQUEST, request={
        "action": "unsubscribe", "epic": "GBPUSD", "epicBroker": EPICS["GBPUSD"], "time_frame": 1})
    ig_worker.wait_type("market_data_response", since=mark, ok=True)
    wait_until(lambda: f"CHART:{EPICS['GBPUSD']}:SECOND" not in sim.subscribed_items(), 5,
               what="unsubscribe at the server")


def test_unknown_time_frame_is_an_error(sim, ig_worker):
    mark = ig_worker.request(In.MARKET_DATA_REQUEST, request={"action": "subscribe", "epic": "EURUSD",
                                                              "time_frame": 7})
    error = ig_worker.wait_type("error", since=mark)
    assert "time frame 7s" in error["reason"]


def test_client_throttle_keeps_under_igs_trading_allowance(sim, tmp_path):
    sim.trading_allowance = 3
    with WorkerHarness(ig_document(sim, account_trading_per_minute=3, timeout=1.0), tmp_path) as worker:
        worker.wait_type("connection", state="connected", timeout=20)
        for _ in range(3):
            _open(worker, "EURUSD", 1)
        order = worker.order("EURUSD", 1)
        mark = worker.request(In.ORDER_OPEN, order)
        refused = worker.wait_order(order.client_order_id, "REJECTED", since=mark)
        assert "trading request allowance reached" in refused["order"]["reason"]
    assert sim.requests.count(("POST", "/positions/otc")) == 3  # IG never had to refuse one


def test_igs_allowance_error_rejects_the_order_with_its_code(sim, ig_worker):
    sim.trading_allowance = 1
    _open(ig_worker, "EURUSD", 1)
    order = ig_worker.order("EURUSD", 1)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    refused = ig_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "error.public-api.exceeded-account-trading-allowance" in refused["order"]["reason"]


def test_shutdown_logs_out(sim, ig_worker):
    assert ig_worker.stop() == 0
    assert ("DELETE", "/session") in sim.requests
