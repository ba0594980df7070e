"""Faults a Kite account lives through: the daily token expiry, a dropped ticker,
duplicated order updates, lost answers, worker restarts, orders outside market hours."""
from __future__ import annotations

import time

import pytest

from account_managers.kite import KiteAccountManager
from tests import faultstats
from account_managers.kite.parsing import tag_for
from account_managers.kite.store import KiteStore
from maotrade.messages import EngineToWorker as In, message
from tests.kit import WorkerHarness, wait_until
from tests.kite.conftest import kite_document

pytestmark = pytest.mark.fault


def _order_fills(worker, client_order_id, since=0):
    return [m["fill"] for m in worker.received[since:] if m.get("type") == "order_event"
            and m["client_order_id"] == client_order_id and m.get("fill")]


def test_token_expiry_suspends_then_a_new_login_resumes_without_restart(kite_broker, kite_worker, tmp_path):
    server, document = kite_broker
    pid = kite_worker.process.pid
    mark = len(kite_worker.received)
    server.expire_tokens()
    suspended = kite_worker.wait_type("connection", state="reconnecting", since=mark, timeout=15)
    assert suspended["reason"] == "token expired: run maotrade admin account kite-login 801 --request-token …"
    order = kite_worker.order("INFY", 1)
    refused_at = kite_worker.request(In.ORDER_OPEN, order)
    rejected = kite_worker.wait_order(order.client_order_id, "REJECTED", since=refused_at)
    assert "reconnecting" in rejected["reason"]
    # Suspended means quiet: no request goes to Kite with the dead token while we wait.
    before = len(server.requests)
    time.sleep(1.0)  # an observation window for a negative assertion, not a synchronization
    assert len(server.requests) == before
    # The operator logs in: the same code path as `maotrade admin account kite-login`.
    session = KiteAccountManager.login_with_request_token(document, server.issue_request_token(), [tmp_path])
    assert session["user_id"] == server.user_id
    kite_worker.wait_type("connection", state="connected", since=mark, timeout=15)
    assert kite_worker.process.pid == pid
    again = kite_worker.order("INFY", 1)
    at = kite_worker.request(In.ORDER_OPEN, again)
    kite_worker.wait_order(again.client_order_id, "FILLED", since=at)
    faultstats.record(faults=1, orders=2)


def test_expired_token_at_start_waits_for_a_login(kite_server, tmp_path):
    document = kite_document(kite_server, access_token="stale-token-from-yesterday")
    with WorkerHarness(document, tmp_path) as worker:
        told = worker.wait_type("error", timeout=20)
        assert told["reason"] == "token expired: run maotrade admin account kite-login 801 --request-token …"
        worker.wait_type("connection", state="reconnecting")
        time.sleep(1.0)  # an observation window: waiting for a login costs Kite no requests
        assert sum(1 for _, path in kite_server.requests if path == "/user/profile") == 1
        KiteAccountManager.login_with_request_token(document, kite_server.issue_request_token(), [tmp_path])
        assert worker.wait_type("init_result", timeout=20)["ok"] is True
        worker.wait_type("connection", state="connected")


def test_dropped_ticker_is_caught_up_by_rest_and_resubscribed(kite_server, kite_worker):
    at = kite_worker.request(In.MARKET_DATA_REQUEST, request={"epic": "SBIN", "time_frame": 1})
    kite_worker.wait_type("market_data_response", since=at)
    wait_until(lambda: 779521 in kite_server.subscriptions(), 10, what="subscription")
    order = kite_worker.order("SBIN", 3, order_type="LIMIT", price=595.0)
    at = kite_worker.request(In.ORDER_OPEN, order)
    kite_worker.wait_order(order.client_order_id, "ACCEPTED", since=at)
    kite_server.refuse_ticker = True
    kite_server.drop_ticker()
    polls_before = kite_server.requests.count(("GET", "/trades"))
    kite_server.set_price("NSE:SBIN", 594.0)  # fills while no order update can reach us
    filled = kite_worker.wait_order(order.client_order_id, "FILLED", since=at, timeout=15)
    assert filled["avg_fill_price"] == 595.0
    assert kite_server.requests.count(("GET", "/trades")) > polls_before  # REST polling found it
    kite_server.refuse_ticker = False
    wait_until(lambda: kite_server.subscriptions().get(779521) == "quote", 30, what="resubscription")
    mark = len(kite_worker.received)
    kite_server.set_price("NSE:SBIN", 599.5)
    kite_worker.wait_for(lambda m: m.get("type") == "market_data" and m.get("close") == 599.5, since=mark,
                         what="ticks after the ticker came back")
    assert len(_order_fills(kite_worker, order.client_order_id)) == 1
    faultstats.record(faults=1, orders=1)


def test_duplicated_order_updates_count_each_trade_once(kite_server, kite_worker):
    kite_server.call(setattr, kite_server, "duplicate_updates", True)
    kite_server.call(setattr, kite_server, "partial_fills", 2)
    order = kite_worker.order("RELIANCE", 6)
    at = kite_worker.request(In.ORDER_OPEN, order)
    kite_worker.wait_order(order.client_order_id, "FILLED", since=at)
    mark = kite_worker.request(In.PORTFOLIO_REQUEST)  # a later message: every duplicate has been seen
    kite_worker.wait_type("portfolio", since=mark)
    fills = _order_fills(kite_worker, order.client_order_id)
    assert sorted(f["exec_id"] for f in fills) == sorted(t["trade_id"] for t in kite_server.snapshot()["trades"])
    assert len(fills) == 2 and sum(f["qty"] for f in fills) == 6
    faultstats.record(faults=1, orders=1)


def test_lost_answer_is_found_by_tag_never_resent(kite_server, kite_worker):
    kite_server.fail_next_order("lost_answer")
    order = kite_worker.order("INFY", 2)
    at = kite_worker.request(In.ORDER_OPEN, order)
    unknown = kite_worker.wait_for(lambda m: m.get("type") == "order_event" and m.get("event") == "unknown", since=at)
    assert tag_for(order.client_order_id) in unknown["reason"]
    filled = kite_worker.wait_order(order.client_order_id, "FILLED", since=at)
    assert filled["broker_ref"]
    assert kite_server.placed_tags[tag_for(order.client_order_id)] == 1
    faultstats.record(faults=1, orders=1)


def test_status_of_an_order_kite_never_saw_is_not_found(kite_server, kite_worker):
    kite_server.fail_next_order("NetworkException")
    order = kite_worker.order("INFY", 2)
    at = kite_worker.request(In.ORDER_OPEN, order)
    kite_worker.wait_for(lambda m: m.get("type") == "order_event" and m.get("event") == "unknown", since=at)
    at = kite_worker.request(In.ORDER_STATUS_REQUEST, order)
    answer = kite_worker.wait_for(lambda m: m.get("type") == "order_event" and m.get("event") == "not_found", since=at)
    assert answer["client_order_id"] == order.client_order_id
    assert tag_for(order.client_order_id) not in kite_server.placed_tags


def test_tag_mapping_survives_a_worker_restart(kite_server, kite_worker):
    order = kite_worker.order("SBIN", -4, order_type="LIMIT", price=610.0,
                              client_order_id="strategy-a-0123456789abcdef/TP")
    assert len(order.client_order_id) > 20
    at = kite_worker.request(In.ORDER_OPEN, order)
    accepted = kite_worker.wait_order(order.client_order_id, "ACCEPTED", since=at)
    kite_worker.kill()
    mark = len(kite_worker.received)
    kite_worker.start()
    kite_worker.wait_type("connection", state="connected", since=mark, timeout=30)
    resent = kite_worker.request(In.ORDER_OPEN, order)  # sent again by mistake: Kite must not see it twice
    answer = kite_worker.wait_order(order.client_order_id, "ACCEPTED", since=resent,
                                    request=In.ORDER_STATUS_REQUEST)
    assert answer["broker_ref"] == accepted["broker_ref"]
    kite_server.set_price("NSE:SBIN", 611.0)
    filled = kite_worker.wait_order(order.client_order_id, "FILLED", since=mark, timeout=15)
    assert filled["broker_ref"] == accepted["broker_ref"]
    [row] = kite_server.snapshot()["orders"]
    assert row["tag"] == tag_for(order.client_order_id) and len(row["tag"]) == 20
    faultstats.record(faults=1, orders=1)


def test_an_open_recorded_but_never_placed_before_a_crash_is_placed_once_when_sent_again(kite_server,
                                                                                       kite_worker):
    # A worker killed between recording the tag and its REST call leaves the tag in its
    # store and nothing at Kite; the engine, told "not found", sends the order again.
    order = kite_worker.order("INFY", 2, order_type="STOP", price=1520.0, client_order_id="brk-crash-1/SL")
    tag = tag_for(order.client_order_id)
    kite_worker.kill()
    store = KiteStore(kite_worker.workdir / "kite" / "account-801.sqlite")
    store.link_tag(tag, order.client_order_id, "regular")
    store.close()
    mark = len(kite_worker.received)
    kite_worker.start()
    kite_worker.wait_type("connection", state="connected", since=mark, timeout=30)
    at = kite_worker.request(In.ORDER_OPEN, order)
    accepted = kite_worker.wait_order(order.client_order_id, "ACCEPTED", since=at, timeout=15)
    [row] = [o for o in kite_server.snapshot()["orders"] if o["tag"] == tag]
    assert row["order_id"] == accepted["broker_ref"] and kite_server.placed_tags[tag] == 1
    faultstats.record(faults=1, orders=1)


def test_orders_outside_market_hours_are_refused_locally(kite_server, tmp_path):
    document = kite_document(kite_server, trading_days=[])
    with WorkerHarness(document, tmp_path) as worker:
        worker.wait_type("connection", state="connected", timeout=30)
        order = worker.order("INFY", 1)
        at = worker.request(In.ORDER_OPEN, order)
        rejected = worker.wait_order(order.client_order_id, "REJECTED", since=at)
        assert "market closed on" in rejected["reason"] and "amo" in rejected["reason"]
    assert not any(path.startswith("/orders/") for _, path in kite_server.requests)


def test_orders_outside_market_hours_go_as_amo_when_configured(kite_server, tmp_path):
    kite_server.call(setattr, kite_server, "market_open", False)
    document = kite_document(kite_server, trading_days=[], outside_hours="amo")
    with WorkerHarness(document, tmp_path) as worker:
        worker.wait_type("connection", state="connected", timeout=30)
        order = worker.order("INFY", 3)
        at = worker.request(In.ORDER_OPEN, order)
        worker.wait_order(order.client_order_id, "ACCEPTED", since=at)
        [row] = kite_server.snapshot()["orders"]
        assert (row["variety"], row["status"]) == ("amo", "AMO REQ RECEIVED")
        kite_server.open_market()
        worker.wait_order(order.client_order_id, "FILLED", since=at)
    assert kite_server.net_quantity("NSE:INFY") == 3


def test_session_of_another_user_stops_the_worker_for_good(kite_server, tmp_path):
    document = kite_document(kite_server)
    document["accountConfig"]["user_id"] = "ZZ9999"
    with WorkerHarness(document, tmp_path) as worker:
        gone = worker.wait_type("account_disconnected", timeout=20)
        assert "user AB1234" in gone["reason"] and "ZZ9999" in gone["reason"]
        worker.process.join(10)
        assert worker.process.exitcode == 3
    assert document["accountConfig"]["access_token"] not in gone["reason"]


def test_token_refused_while_placing_suspends_and_the_order_is_refused(kite_server, kite_worker):
    # The catch-up after connecting must be over, or it could be the one to meet the dead token.
    wait_until(lambda: ("GET", "/trades") in kite_server.requests, 10, what="the catch-up after connecting")
    kite_server.call(kite_server.access_tokens.clear)  # expired, but the ticker has not noticed yet
    order = kite_worker.order("INFY", 1)
    at = kite_worker.request(In.ORDER_OPEN, order)
    rejected = kite_worker.wait_order(order.client_order_id, "REJECTED", since=at)
    assert "not placed: token expired: run maotrade admin account kite-login 801" in rejected["reason"]
    kite_worker.wait_type("connection", state="reconnecting", since=at)
    assert tag_for(order.client_order_id) not in kite_server.placed_tags


def test_order_rate_limit_holds_on_the_wire(kite_server, kite_worker):
    orders = [kite_worker.order("SBIN", 1, order_type="LIMIT", price=500.0) for _ in range(25)]
    mark = len(kite_worker.received)
    for order in orders:
        kite_worker.send(message(In.ORDER_OPEN, order=order.to_dict()))
    for order in orders:
        kite_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark, timeout=20)
    times = sorted(kite_server.call(lambda: list(kite_server.placed_at)))
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert len(times) == 25 and busiest <= 10


def test_ticker_that_gives_up_reconnects_the_account(kite_server, tmp_path):
    document = kite_document(kite_server, ticker_max_tries=1)
    with WorkerHarness(document, tmp_path) as worker:
        worker.wait_type("connection", state="connected", timeout=30)
        mark = len(worker.received)
        kite_server.refuse_ticker = True
        kite_server.drop_ticker()
        lost = worker.wait_type("connection", state="reconnecting", since=mark, timeout=30)
        assert "gave up" in lost["reason"]
        kite_server.refuse_ticker = False
        worker.wait_type("connection", state="connected", since=mark, timeout=30)
        order = worker.order("INFY", 1)
        at = worker.request(In.ORDER_OPEN, order)
        worker.wait_order(order.client_order_id, "FILLED", since=at)
    faultstats.record(faults=1, orders=1)
