"""The whole engine with real processes: admin service, engine, workers, strategies."""
from __future__ import annotations

import json
import os
import sqlite3
import time

import psutil
import pytest
from cryptography.fernet import Fernet

from engine.orders import NEVER_REACHED
from tests import faultstats
from tests.engine_kit import AdminService, EngineProcess
from tests.kit import wait_until

PAPER = json.dumps({"seed": 3, "price_interval": 0.02, "reconnect_base": 0.2, "order_timeout": 3})


@pytest.fixture
def env():
    return {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(),
            "MAOTRADE_ADMIN_TOKEN": "test-token-long-enough-for-a-test-0123456789",
            "MAOTRADE_CONFIG_TOKEN": "config-read-token-long-enough-0123456789"}


@pytest.fixture
def admin(tmp_path, env):
    service = AdminService(tmp_path / "admin", env)
    service.cli("broker", "add", "paper", "--class", "paper.PaperAccountManager", "--config", PAPER)
    for account in ("501", "502"):
        service.cli("account", "add", account, "--broker", "paper", "--config", '{"initial_balance": 50000}')
        service.cli("mapping", "set", account, "EURUSD", "EURUSD")
        service.cli("mapping", "set", account, "SPY", "SPY")
    yield service
    service.stop()


@pytest.fixture
def engine_factory(tmp_path, env, admin):
    started = []

    def make(accounts=("501",), *extra):
        engine = EngineProcess(tmp_path / f"engine{len(started)}", list(accounts), *extra, env=env,
                               config_url=admin.url)
        started.append(engine)
        return engine

    yield make
    for engine in started:
        engine.kill()


def broker_orders(data_dir, account):
    """The paper broker's own record of the orders it took (client order id -> order)."""
    db = sqlite3.connect(str(data_dir / "paper" / f"account-{account}.sqlite"))
    try:
        return {cid: json.loads(data) for cid, data in db.execute("SELECT client_order_id, data FROM orders")}
    finally:
        db.close()


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_strategy_process_gets_bars_and_its_order_filled_with_right_position_and_pnl(engine_factory, tmp_path):
    record = tmp_path / "strategy.jsonl"
    engine = engine_factory(("501",), "--strategy", "tests.strategies:RecordingStrategy",
                            "--param", f"record={record}", "--param", "qty=250")
    wait_until(lambda: [r for r in records(record) if r["event"] == "portfolio" and r["positions"]], 60,
               interval=0.05, what="strategy portfolio after fill")
    seen = records(record)
    bars = [r for r in seen if r["event"] == "bar"]
    assert bars and all(b["epic"] == "EURUSD" and b["time_frame"] == 1 for b in bars)
    sent = next(r for r in seen if r["event"] == "sent")["client_order_id"]
    filled = next(r for r in seen if r["event"] == "order" and r["status"] == "FILLED")
    assert filled["client_order_id"] == sent and filled["filled_qty"] == 250
    portfolio = next(r for r in seen if r["event"] == "portfolio" and r["positions"])
    [position] = [p for p in portfolio["positions"] if p["epic"] == "EURUSD"]
    assert position["qty"] == 250 and position["avg_price"] == pytest.approx(filled["avg_fill_price"])
    assert position["unrealized_pnl"] == pytest.approx((position["market_price"] - position["avg_price"]) * 250)
    # The broker's own record agrees: one order, filled once, at the same price.
    broker = broker_orders(engine.data_dir, "501")
    assert list(broker) == [sent]
    assert broker[sent]["status"] == "FILLED" and broker[sent]["avg_fill_price"] == filled["avg_fill_price"]
    info = [r for r in seen if r["event"] == "account_info"][-1]
    assert info["balance"] == pytest.approx(50000.0)  # no commission configured, nothing realized yet
    assert engine.interrupt() == 0
    assert records(record)[-1]["event"] == "stop"
    assert not (engine.data_dir / "engine.json").exists()


@pytest.mark.fault
def test_worker_killed_is_restarted_and_resynced_with_no_order_lost_or_twice(engine_factory):
    engine = engine_factory(("501", "502"))
    first = engine.wait_ready("501")
    engine.wait_ready("502")
    engine.send("order_open", account="501", client_order_id="k-limit", epic="SPY", qty=2,
                order_type="LIMIT", price=1.0)
    engine.wait_order("k-limit", "ACCEPTED")
    engine.send("order_open", account="501", client_order_id="k-fill", epic="EURUSD", qty=10)
    engine.wait_order("k-fill", "FILLED")
    # An order sent in the same breath as the kill: the broker may or may not have it.
    engine.send("order_open", account="501", client_order_id="k-race", epic="EURUSD", qty=5)
    psutil.Process(first["pid"]).kill()
    engine.wait_order("k-race", {"FILLED", "REJECTED"})
    engine.send("order_open", account="501", client_order_id="k-during", epic="EURUSD", qty=1)
    during = engine.wait_order("k-during", {"REJECTED", "FILLED"})
    after = engine.wait_ready("501")
    assert after["pid"] != first["pid"] and after["restarts"] == 1
    # The other account never noticed.
    assert engine.account_status("502")["restarts"] == 0
    engine.send("order_cancel", account="501", client_order_id="k-limit")
    engine.wait_order("k-limit", "CANCELLED")
    engine.send("order_open", account="501", client_order_id="k-after", epic="EURUSD", qty=3)
    engine.wait_order("k-after", "FILLED")
    status = engine.account_status("501")
    broker = broker_orders(engine.data_dir, "501")
    journal = {o["client_order_id"]: o for o in status["portfolio"]["orders"]}
    assert not journal, f"orders left open: {journal}"
    # Every order the broker took is known to the engine, in the same state, exactly once.
    db = sqlite3.connect(str(engine.data_dir / "journal.sqlite"))
    engine_orders = {cid: json.loads(data) for cid, data in db.execute(
        "SELECT client_order_id, data FROM orders WHERE account = '501'")}
    fills = db.execute("SELECT client_order_id, COUNT(*) FROM fills WHERE account = '501' GROUP BY 1").fetchall()
    db.close()
    for cid, order in broker.items():
        assert engine_orders[cid]["status"] == order["status"], cid
        assert engine_orders[cid]["filled_qty"] == order["filled_qty"], cid
    for cid, order in engine_orders.items():
        if cid not in broker:
            assert order["status"] == "REJECTED", f"{cid} unknown to the broker but {order['status']}"
    assert all(count == 1 for _, count in fills), fills
    faultstats.record(faults=1, orders=len(engine_orders))
    if during["status"] == "REJECTED":
        # Refused up front if the engine already knew the worker was gone; if it was routed
        # to the dead worker first, the restarted one does not know it and it is not resent.
        assert ("account 501 is" in during["reason"]
                or NEVER_REACHED in during["reason"]), during["reason"]
    expected = sum(o["filled_qty"] for o in broker.values() if o["epic"] == "EURUSD")
    [position] = [p for p in status["portfolio"]["positions"] if p["epic"] == "EURUSD"]
    assert position["qty"] == pytest.approx(expected)
    assert engine.interrupt() == 0


def test_bad_orders_and_malformed_frames_are_refused_and_the_engine_keeps_running(engine_factory):
    engine = engine_factory(("501",))
    engine.wait_ready("501")
    engine.send("order_open", account="501", client_order_id="z0", epic="EURUSD", qty=0)
    assert "non-zero" in engine.wait_order("z0", "REJECTED")["reason"]
    engine.send("order_open", account="501", client_order_id="u1", epic="NOPE", qty=1)
    rejected = engine.wait_order("u1", "REJECTED")
    assert rejected["code"] == "unknown_instrument" and "NOPE" in rejected["reason"]
    engine.client.socket.send(b"\xc1 not msgpack")
    engine.client.socket.send(b"\x93\x01\x02\x03")
    engine.send("order_open", account="999", epic="EURUSD", qty=1)
    engine.send("order_open", account="501", client_order_id="ok1", epic="EURUSD", qty=1)
    engine.wait_order("ok1", "FILLED")
    # Re-sending a journaled client order id never reaches the broker again.
    mark = engine.mark()
    engine.send("order_open", account="501", client_order_id="ok1", epic="EURUSD", qty=1)
    duplicate = engine.wait_order("ok1", "FILLED", since=mark)
    assert duplicate.get("duplicate") is True
    assert list(broker_orders(engine.data_dir, "501")) == ["ok1"]
    status = engine.status()
    assert status["engine"]["malformed_messages"] == 2  # the two broken frames; a refusal is not malformed
    assert status["engine"]["orders_refused"] == 2
    errors = [m for m in engine.received if m.get("type") == "error"]
    assert any("unknown account" in e["reason"] for e in errors)
    assert engine.interrupt() == 0
