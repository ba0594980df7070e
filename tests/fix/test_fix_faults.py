"""The FIX worker when things go wrong: dropped lines, silent peers, restarts, logouts."""
from __future__ import annotations

import sqlite3

import pytest

from maotrade.messages import EngineToWorker as In
from tests.kit import FIX_SYMBOL as SYMBOL, fix_document
from tests.fix.quickfix_acceptor import QuickFixAcceptor
from tests.kit import WorkerHarness, free_port

pytestmark = pytest.mark.fault


def sequence_numbers(workdir) -> tuple[int, int]:
    """(next_out, next_in) the worker has persisted for its session."""
    with sqlite3.connect(str(workdir / "fix" / "CLIENT-BROKER.sqlite")) as db:
        return db.execute("SELECT next_out, next_in FROM session").fetchone()


def fill_responses(harness, exec_id: str) -> list[dict]:
    return [m for m in harness.received if m.get("type") == "order_event"
            and (m.get("fill") or {}).get("exec_id") == exec_id]


def test_cut_line_resumes_session_and_recovers_missed_report_once(fix_worker, tmp_path):
    order = fix_worker.order("ES_FUT", 6, order_type="LIMIT", price=90.0)
    mark = fix_worker.request(In.ORDER_OPEN, order)
    fix_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    out_before, in_before = sequence_numbers(tmp_path / "worker")

    fix_worker.relay.blocked.set()
    mark = len(fix_worker.received)
    logouts = fix_worker.acceptor.count("LOGOUT")
    fix_worker.relay.cut()
    fix_worker.wait_type("connection", state="reconnecting", since=mark)
    fix_worker.acceptor.wait_line(lambda _: fix_worker.acceptor.count("LOGOUT") > logouts, what="LOGOUT")
    # Filled while we are away: QuickFIX stores the report and must resend it.
    fix_worker.acceptor.command(f"fill {order.client_order_id} 4 89.75")
    fix_worker.relay.blocked.clear()

    fix_worker.wait_type("connection", state="connected", since=mark, timeout=15)
    part = fix_worker.wait_order(order.client_order_id, "PARTIALLY_FILLED", since=mark)
    assert part["fill"]["qty"] == 4 and part["fill"]["price"] == 89.75
    status = fix_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STATUS_REQUEST)
    assert status["order"]["filled_qty"] == 4

    fix_worker.acceptor.command(f"fill {order.client_order_id} 2 90")
    done = fix_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert done["order"]["filled_qty"] == 6
    assert len(fill_responses(fix_worker, part["fill"]["exec_id"])) == 1
    out_after, in_after = sequence_numbers(tmp_path / "worker")
    assert out_after > out_before and in_after > in_before  # continued, never reset
    assert fix_worker.acceptor.count("LOGON") == 2


def test_order_sent_into_a_dead_line_is_resent_after_reconnect(tmp_path, acceptor, relay):
    with WorkerHarness(fix_document(relay.port, order_timeout=15.0), tmp_path / "worker") as worker:
        worker.wait_type("connection", state="connected", timeout=20)
        relay.freeze()
        order = worker.order("ES_FUT", 3)
        mark = worker.request(In.ORDER_OPEN, order)
        lost = worker.wait_type("connection", state="reconnecting", since=mark, timeout=10)
        assert "TestRequest" in lost["reason"]
        relay.cut()
        relay.thaw()
        worker.wait_type("connection", state="connected", since=mark, timeout=15)
        filled = worker.wait_order(order.client_order_id, "FILLED", since=mark)
        assert filled["order"]["filled_qty"] == 3
        assert acceptor.count("APP D") == 1  # the resent order reached the broker once


def test_restart_continues_the_same_sequence_numbers(tmp_path, acceptor):
    document = fix_document(acceptor.port)
    with WorkerHarness(document, tmp_path / "worker") as first:
        first.wait_type("connection", state="connected", timeout=20)
        order = first.order("ES_FUT", 1)
        first.request(In.ORDER_OPEN, order)
        first.wait_order(order.client_order_id, "FILLED")
        assert first.stop() == 0
    acceptor.wait_line(lambda line: line == "LOGOUT")
    out_before, in_before = sequence_numbers(tmp_path / "worker")
    assert out_before > 3 and in_before > 3
    with WorkerHarness(document, tmp_path / "worker") as second:
        second.wait_type("connection", state="connected", timeout=20)
        again = second.order("ES_FUT", 2)
        mark = second.request(In.ORDER_OPEN, again)
        second.wait_order(again.client_order_id, "FILLED", since=mark)
        mark = second.request(In.PORTFOLIO_REQUEST)
        positions = second.wait_type("portfolio", since=mark)["portfolio"]["positions"]
        assert [p["qty"] for p in positions] == [3]  # the first run's fill is remembered
    out_after, _ = sequence_numbers(tmp_path / "worker")
    assert out_after > out_before
    assert acceptor.count("LOGON") == 2


def test_heartbeat_answers_test_request_and_silent_peer_is_dropped(fix_worker):
    fix_worker.acceptor.command("testrequest PING-1")
    fix_worker.acceptor.wait_line(lambda line: line == "HEARTBEAT_REPLY PING-1")
    mark = len(fix_worker.received)
    fix_worker.relay.freeze()
    lost = fix_worker.wait_type("connection", state="reconnecting", since=mark, timeout=10)
    assert "TestRequest" in lost["reason"] and "unanswered" in lost["reason"]
    fix_worker.relay.cut()
    fix_worker.relay.thaw()
    fix_worker.wait_type("connection", state="connected", since=mark, timeout=15)


def test_broker_logout_reconnects_and_shutdown_logs_out(fix_worker):
    mark = len(fix_worker.received)
    fix_worker.acceptor.command("logout")
    lost = fix_worker.wait_type("connection", state="reconnecting", since=mark)
    # QuickFIX usually sends its Text; under load it may log out without one.
    assert "logged out by the acceptor" in lost["reason"]
    fix_worker.wait_type("connection", state="connected", since=mark, timeout=15)
    logouts = fix_worker.acceptor.count("LOGOUT")
    assert fix_worker.stop() == 0
    fix_worker.acceptor.wait_line(lambda _: fix_worker.acceptor.count("LOGOUT") > logouts, what="LOGOUT")


def test_wrong_password_stops_the_account_for_good(tmp_path):
    with QuickFixAcceptor(free_port(), tmp_path / "acceptor", password="right") as broker:
        with WorkerHarness(fix_document(broker.port, password="wrong"), tmp_path / "worker") as worker:
            gone = worker.wait_type("account_disconnected", timeout=20)
            assert "invalid username or password" in gone["reason"]
            assert "wrong" not in gone["reason"]
            worker.process.join(10)
            assert worker.process.exitcode == 3


def test_broker_that_forgot_its_sequence_numbers_stops_the_account(tmp_path):
    port = free_port()
    document = fix_document(port)
    with QuickFixAcceptor(port, tmp_path / "acceptor-1"):
        with WorkerHarness(document, tmp_path / "worker") as first:
            first.wait_type("connection", state="connected", timeout=20)
            order = first.order("ES_FUT", 1)
            first.request(In.ORDER_OPEN, order)
            first.wait_order(order.client_order_id, "FILLED")
    # A new acceptor store starts at 1: its Logon is below what we expect (too low).
    with QuickFixAcceptor(port, tmp_path / "acceptor-2"):
        with WorkerHarness(document, tmp_path / "worker") as second:
            gone = second.wait_type("account_disconnected", timeout=20)
            assert "sequence numbers must be reconciled" in gone["reason"]
            second.process.join(10)
            assert second.process.exitcode == 3


def test_reset_on_logon_starts_both_sides_at_one(tmp_path, acceptor):
    document = fix_document(acceptor.port, reset_on_logon=True)
    for _ in range(2):
        with WorkerHarness(document, tmp_path / "worker") as worker:
            worker.wait_type("connection", state="connected", timeout=20)
            order = worker.order("ES_FUT", 1)
            worker.request(In.ORDER_OPEN, order)
            worker.wait_order(order.client_order_id, "FILLED")
            assert sequence_numbers(tmp_path / "worker")[0] < 6


def test_market_data_subscription_survives_a_reconnect(fix_worker):
    request = {"action": "subscribe", "epic": "ES_FUT", "epicBroker": SYMBOL, "time_frame": 1}
    mark = fix_worker.request(In.MARKET_DATA_REQUEST, request=request)
    fix_worker.wait_type("market_data", since=mark)
    fix_worker.relay.cut()
    fix_worker.wait_type("connection", state="reconnecting", since=mark)
    fix_worker.wait_type("connection", state="connected", since=mark, timeout=15)
    fix_worker.acceptor.wait_line(lambda _: fix_worker.acceptor.count("APP V") == 2, what="second 35=V")
    mark = len(fix_worker.received)
    fix_worker.acceptor.command(f"price {SYMBOL} 102.5")
    bar = fix_worker.wait_for(lambda m: m.get("type") == "market_data" and m["close"] == 102.5, since=mark)
    assert bar["epic"] == "ES_FUT"
