"""The IG Account Manager in a real worker process against the IG simulator, with the
real ``requests`` and ``lightstreamer-client-lib`` on real sockets."""
from __future__ import annotations

from maotrade.messages import EngineToWorker as In
from tests.ig.conftest import EPICS, ig_document
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


def test_unmapped_instrument_is_refused_before_reaching_ig(sim, ig_worker):
    order = ig_worker.order("NOPE", 1)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    rejected = ig_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "NOPE" in rejected["order"]["reason"]
    assert not any(path == "/positions/otc" for _, path in sim.requests)
