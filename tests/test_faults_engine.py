"""Guarantee 7: the engine killed (SIGKILL) at any point of an order's life and started
again ends where it would have without the crash, checked against the broker's record."""
from __future__ import annotations

import json
import sqlite3

import psutil
import pytest
from cryptography.fernet import Fernet

from tests import faultstats
from tests.engine_kit import AdminService, EngineProcess
from tests.kit import wait_until

PAPER = json.dumps({"seed": 5, "price_interval": 0.05, "reconnect_base": 0.2, "order_timeout": 3})
pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def env():
    return {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(),
            "MAOTRADE_ADMIN_TOKEN": "t-long-enough-for-a-test-0123456789",
            "MAOTRADE_CONFIG_TOKEN": "config-read-token-long-enough-0123456789"}


@pytest.fixture(scope="module")
def admin(tmp_path_factory, env):
    service = AdminService(tmp_path_factory.mktemp("admin"), env)
    service.cli("broker", "add", "paper", "--class", "paper.PaperAccountManager", "--config", PAPER)
    service.cli("account", "add", "601", "--broker", "paper", "--config", '{"initial_balance": 1000}')
    service.cli("mapping", "set", "601", "EURUSD", "EURUSD")
    yield service
    service.stop()


def journal(data_dir):
    db = sqlite3.connect(str(data_dir / "journal.sqlite"))
    try:
        orders = {cid: json.loads(d) for cid, d in db.execute("SELECT client_order_id, data FROM orders")}
        fills = db.execute("SELECT exec_id, client_order_id FROM fills").fetchall()
        positions = dict(db.execute("SELECT epic, qty FROM positions").fetchall())
        return orders, fills, positions
    finally:
        db.close()


def broker_record(data_dir):
    db = sqlite3.connect(str(data_dir / "paper" / "account-601.sqlite"))
    try:
        orders = {cid: json.loads(d) for cid, d in db.execute("SELECT client_order_id, data FROM orders")}
        book = json.loads(db.execute("SELECT value FROM meta WHERE key = 'book'").fetchone()[0])
        return orders, book
    finally:
        db.close()


# (failpoint, number of the order that triggers it): orders 1 and 2 complete normally first.
CASES = ["before_journal", "after_journal", "after_dispatch", "before_fill_apply", "after_fill_apply"]


@pytest.mark.parametrize("point", CASES)
def test_engine_killed_at_each_point_recovers_to_the_broker_state(point, admin, env, tmp_path):
    data = tmp_path / "engine"
    crashing = EngineProcess(data, ["601"], env={**env, "MAOTRADE_FAILPOINTS": f"{point}=3"}, config_url=admin.url)
    crashing.wait_ready("601")
    for key, qty in (("o1", 10), ("o2", -4)):
        crashing.send("order_open", account="601", client_order_id=key, epic="EURUSD", qty=qty)
        crashing.wait_order(key, "FILLED")
    started = crashing.children()
    assert started, "the engine should have started a forkserver and a worker"
    crashing.send("order_open", account="601", client_order_id="o3", epic="EURUSD", qty=7)
    assert crashing.process.wait(30) == -9, "the failpoint did not fire"
    # Nothing the dead engine started may live on (a worker holds a broker session).
    _, survivors = psutil.wait_procs(started, timeout=10)
    assert not survivors, f"processes outlived the engine: {[p.pid for p in survivors]}"
    crashing.kill()
    (data / "engine.json").unlink(missing_ok=True)

    restarted = EngineProcess(data, ["601"], env=env, config_url=admin.url)
    try:
        restarted.wait_ready("601")
        broker_orders, book = broker_record(data)
        orders, fills, positions = journal(data)
        # No order the broker took is unknown to the engine, and none is open or in doubt.
        assert set(broker_orders) <= set(orders)
        for key, order in orders.items():
            if key in broker_orders:
                assert order["status"] == broker_orders[key]["status"] == "FILLED", key
                assert order["filled_qty"] == broker_orders[key]["filled_qty"], key
            else:
                assert order["status"] == "REJECTED" and "never reached the broker" in order["reason"], key
        # Every fill exactly once, and the position equals the broker's.
        exec_ids = [e for e, _ in fills]
        assert len(exec_ids) == len(set(exec_ids)) == sum(1 for o in broker_orders.values() if o["filled_qty"])
        assert positions.get("EURUSD", 0) == pytest.approx(book["positions"]["EURUSD"]["qty"])
        faultstats.record(faults=1, orders=len(orders))
        if point in ("before_journal", "after_journal"):
            assert "o3" not in broker_orders
        elif point != "after_dispatch":  # after dispatch the frame may or may not have left
            assert "o3" in broker_orders
        expected = 13 if "o3" in broker_orders else 6
        assert book["positions"]["EURUSD"]["qty"] == pytest.approx(expected)
        # The account trades on after recovery, and the idempotency key still holds.
        restarted.send("order_open", account="601", client_order_id="o4", epic="EURUSD", qty=1)
        restarted.wait_order("o4", "FILLED")
        if "o3" in broker_orders:
            mark = restarted.mark()
            restarted.send("order_open", account="601", client_order_id="o3", epic="EURUSD", qty=7)
            assert restarted.wait_order("o3", "FILLED", since=mark)["duplicate"] is True
            assert len([o for o in broker_record(data)[0] if o == "o3"]) == 1
        assert restarted.interrupt() == 0
    finally:
        restarted.kill()
