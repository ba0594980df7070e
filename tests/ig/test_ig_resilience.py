"""Faults injected into the IG simulator: dropped streams, expired tokens, lost answers,
refused REST calls. Every order ends in a known state and no deal is sent twice."""
from __future__ import annotations

import threading

from account_managers.ig import parsing as P
from account_managers.ig.rest import IGRestClient
from account_managers.ig.streaming import IGStream
from account_managers.ig.throttle import Throttle
from maotrade.messages import EngineToWorker as In
from tests.kit import IG_EPICS as EPICS
from tests.kit import wait_until

EURUSD = EPICS["EURUSD"]


def _reconnected(worker, since):
    worker.wait_type("connection", since=since, state="reconnecting", timeout=10)
    worker.wait_type("connection", since=since, state="connected", timeout=15)


def test_the_stream_counts_as_open_only_once_the_trade_subscription_is_confirmed(sim):
    # A stop IG fires just after a (re)connect is told only on the trade stream: an update
    # published before the server took the subscription never arrives. So the stream is
    # not open (nor the account connected) until the server confirmed that subscription.
    sim.tlcp.subscription_delay["TRADE:"] = 0.5
    session = IGRestClient(sim.rest_url, sim.user, sim.password, sim.api_key, "XYZ02", 5,
                           Throttle(60, 60, 60)).login()
    delivered = threading.Event()
    stream = IGStream(session.lightstreamer_endpoint, session.account_id, session.stream_password, "",
                      deliver=lambda key, item, values, changed: delivered.set(),
                      on_status=lambda status: None, on_error=lambda key, reason: None)
    try:
        stream.subscribe("trade", "DISTINCT", ["TRADE:XYZ02"], P.TRADE_FIELDS, False)
        assert stream.connect(10, confirmed=("trade",))
        sim.push_trade_raw("XYZ02", OPU='{"dealId": "D1", "status": "DELETED"}')
        assert delivered.wait(5), "the update published right after connect was lost"
    finally:
        stream.close()


def test_stream_drop_restores_every_subscription(sim, ig_worker):
    frames = [("EURUSD", 60), ("EURUSD", 1), ("GBPUSD", 300), ("FTSE", 3600)]
    for epic, frame in frames:
        mark = ig_worker.request(In.MARKET_DATA_REQUEST, request={
            "action": "subscribe", "epic": epic, "epicBroker": EPICS[epic], "time_frame": frame})
        ig_worker.wait_type("market_data_response", since=mark, ok=True)
    wait_until(lambda: len(sim.subscribed_items()) == 8, 5, what="4 CHART + 3 MARKET + TRADE subscriptions")
    before = sim.subscribed_items()
    sessions = sim.sessions_created()
    mark = len(ig_worker.received)
    assert sim.drop_streams() == 1
    _reconnected(ig_worker, mark)
    wait_until(lambda: sim.subscribed_items() == before, 10, what="the same subscriptions after reconnect")
    assert sim.sessions_created() > sessions
    mark = len(ig_worker.received)
    sim.push_price(EPICS["FTSE"], 7600.0, 7601.0)
    bar = ig_worker.wait_type("market_data", since=mark, epic="FTSE", time_frame=3600)
    assert bar["close"] == 7600.5
    order = ig_worker.order("EURUSD", 1)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    ig_worker.wait_order(order.client_order_id, "FILLED", since=mark)


def test_expired_token_is_renewed_without_losing_the_order(sim, ig_worker):
    logins = sim.requests.count(("POST", "/session"))
    sim.expire_tokens()
    order = ig_worker.order("EURUSD", 1)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    ig_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert sim.requests.count(("POST", "/session")) == logins + 1
    assert sim.requests.count(("POST", "/positions/otc")) == 2  # refused once at the door, then taken
    assert sim.deal_references[order.client_order_id] == 1
    # The stream logs in again with the new tokens after a drop.
    mark = len(ig_worker.received)
    sim.drop_streams()
    _reconnected(ig_worker, mark)
    wait_until(lambda: f"TRADE:XYZ02" in sim.subscribed_items(), 10, what="TRADE after re-login")


def test_lost_deal_answer_is_resolved_by_reference_not_resent(sim, ig_worker):
    sim.mute_trade_stream = True  # only GET /confirms can tell the outcome
    sim.swallow_next_deal_response()
    order = ig_worker.order("GBPUSD", 1)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    filled = ig_worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=10)
    assert filled["fill"]["price"] == 1.26515
    assert sim.requests.count(("POST", "/positions/otc")) == 1
    assert sim.deal_references[order.client_order_id] == 1
    assert ("GET", f"/confirms/{order.client_order_id}") in sim.requests


def test_refused_rest_calls_reconnect_with_backoff_and_refuse_orders_meanwhile(sim, ig_worker):
    sim.refuse_rest = True
    mark = ig_worker.request(In.ACCOUNT_INFO_REQUEST)
    error = ig_worker.wait_type("error", since=mark)
    assert "HTTP 503" in error["reason"]
    ig_worker.wait_type("connection", since=mark, state="reconnecting")
    order = ig_worker.order("EURUSD", 1)
    mark2 = ig_worker.request(In.ORDER_OPEN, order)
    refused = ig_worker.wait_order(order.client_order_id, "REJECTED", since=mark2)
    assert "reconnecting" in refused["order"]["reason"]
    assert order.client_order_id not in sim.deal_references
    sim.refuse_rest = False
    ig_worker.wait_type("connection", since=mark, state="connected", timeout=15)
    retry = ig_worker.order("EURUSD", 1)
    mark = ig_worker.request(In.ORDER_OPEN, retry)
    ig_worker.wait_order(retry.client_order_id, "FILLED", since=mark)


def test_working_order_filled_while_stream_was_down_is_found_on_resync(sim, ig_worker):
    limit = ig_worker.order("EURUSD", 1, order_type="LIMIT", price=1.0800)
    mark = ig_worker.request(In.ORDER_OPEN, limit)
    ig_worker.wait_order(limit.client_order_id, "ACCEPTED", since=mark)
    sim.tlcp.refuse_sessions = True
    sim.drop_streams()
    sim.push_price(EURUSD, 1.0790, 1.0792)  # fills the limit; nobody is listening
    ig_worker.wait_type("connection", since=mark, state="reconnecting", timeout=10)
    sim.tlcp.refuse_sessions = False
    filled = ig_worker.wait_order(limit.client_order_id, "FILLED", since=mark, timeout=15)
    assert filled["fill"]["price"] == 1.08 and filled["fill"]["qty"] == 1


def test_status_request_after_timeout_asks_ig_by_reference(sim, ig_worker):
    sim.mute_trade_stream = True  # the fill then comes from exactly one GET /confirms
    order = ig_worker.order("EURUSD", 1)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    ig_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    asked = sim.requests.count(("GET", f"/confirms/{order.client_order_id}"))
    mark = ig_worker.request(In.ORDER_STATUS_REQUEST, order)
    status = ig_worker.wait_order(order.client_order_id, since=mark, request="order_status_request")
    assert status["order"]["status"] == "FILLED" and len(status["fills"]) == 1
    assert sim.requests.count(("GET", f"/confirms/{order.client_order_id}")) == asked + 1
    never = ig_worker.order("EURUSD", 1)
    mark = ig_worker.request(In.ORDER_STATUS_REQUEST, never)
    assert ig_worker.wait_order(never.client_order_id, since=mark)["not_found"] is True


def test_close_with_lost_answer_is_reported_unknown_and_never_resent(sim, ig_worker):
    order = ig_worker.order("EURUSD", 2)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    ig_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    sim.swallow_next_deal_response()
    close = ig_worker.order("EURUSD", -2)
    mark = ig_worker.request(In.ORDER_CLOSE, close)
    unknown = ig_worker.wait_for(lambda m: m.get("type") == "order_event" and "unknown" in m
                                 and m["order"]["client_order_id"] == close.client_order_id,
                                 since=mark, timeout=10, what="close reported unknown")
    assert "IG" in unknown["unknown"]
    assert sim.positions == {}  # IG did close it
    ig_worker.wait_type("connection", since=mark, state="connected", timeout=15)
    mark = ig_worker.request(In.ORDER_STATUS_REQUEST, close)
    assert "unknown" in ig_worker.wait_order(close.client_order_id, since=mark)
    assert sim.requests.count(("DELETE", "/positions/otc")) == 1


def test_deal_confirmed_while_disconnected_is_found_after_reconnect(sim, tmp_path):
    from tests.kit import ig_document
    from tests.kit import WorkerHarness
    with WorkerHarness(ig_document(sim, order_timeout=15.0, timeout=1.0), tmp_path) as worker:
        worker.wait_type("connection", state="connected", timeout=20)
        sim.mute_trade_stream = True
        sim.swallow_next_deal_response()
        order = worker.order("EURUSD", 1)
        mark = worker.request(In.ORDER_OPEN, order)
        wait_until(lambda: ("POST", "/positions/otc") in sim.requests, 5, what="the deal at IG")
        sim.refuse_rest = True  # the answer is lost and IG cannot be asked
        worker.wait_type("connection", since=mark, state="reconnecting", timeout=10)
        sim.refuse_rest = False
        filled = worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=15)
        assert filled["fill"]["qty"] == 1
        assert not any("unknown" in m for m in worker.received[mark:] if m.get("type") == "order_event")
    assert sim.deal_references[order.client_order_id] == 1
    assert sim.requests.count(("POST", "/positions/otc")) == 1


def test_garbage_on_the_trade_stream_is_skipped(sim, ig_worker):
    sim.push_trade_raw("XYZ02", CONFIRMS="{not json", OPU="[1, 2]")
    order = ig_worker.order("EURUSD", 1)
    mark = ig_worker.request(In.ORDER_OPEN, order)
    ig_worker.wait_order(order.client_order_id, "FILLED", since=mark)


def test_password_changed_mid_run_stops_the_worker(sim, ig_worker):
    sim.password = "changed-at-ig"
    sim.expire_tokens()
    mark = ig_worker.request(In.ACCOUNT_INFO_REQUEST)
    gone = ig_worker.wait_type("account_disconnected", since=mark)
    assert "error.security.invalid-details" in gone["reason"]
    ig_worker.process.join(10)
    assert ig_worker.process.exitcode == 3
