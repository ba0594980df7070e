"""Guarantee 4: differences between broker and engine are recorded, shown, and resolved
by adopt or ignore, each written to the audit log."""
from __future__ import annotations

import json
import sqlite3

import pytest
from cryptography.fernet import Fernet

from tests import faultstats
from tests.engine_kit import AdminService, EngineProcess, run_cli

pytestmark = pytest.mark.fault


def test_broker_side_changes_are_recorded_shown_adopted_and_audited(tmp_path):
    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(),
           "MAOTRADE_ADMIN_TOKEN": "t-long-enough-for-a-test-0123456789",
           "MAOTRADE_CONFIG_TOKEN": "config-read-token-long-enough-0123456789"}
    admin = AdminService(tmp_path / "admin", env)
    admin.cli("broker", "add", "paper", "--class", "paper.PaperAccountManager", "--config", '{"price_interval": 0.05}')
    admin.cli("account", "add", "801", "--broker", "paper")
    for epic in ("EURUSD", "GBPUSD"):
        admin.cli("mapping", "set", "801", epic, epic)
    data = tmp_path / "engine"
    engine = EngineProcess(data, ["801"], env=env, config_url=admin.url)
    try:
        engine.wait_ready("801")
        engine.send("order_open", account="801", client_order_id="r1", epic="EURUSD", qty=10)
        engine.wait_order("r1", "FILLED")
        assert engine.interrupt() == 0
        # Trades done outside the engine while it was down: the broker's record moves.
        db = sqlite3.connect(str(data / "paper" / "account-801.sqlite"))
        book = json.loads(db.execute("SELECT value FROM meta WHERE key = 'book'").fetchone()[0])
        book["positions"]["EURUSD"]["qty"] = 4.0
        book["positions"]["GBPUSD"] = {"epic": "GBPUSD", "qty": -3.0, "avg_price": 1.25, "realized_pnl": 0.0}
        with db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'book'", (json.dumps(book),))
        db.close()
        (data / "engine.json").unlink(missing_ok=True)
        engine = EngineProcess(data, ["801"], env=env, config_url=admin.url)
        engine.wait_ready("801")
        told = {(m["key"], m["engine"], m["broker"]) for m in engine.received + engine.collect()
                if m.get("type") == "discrepancy"}
        shown = run_cli("reconcile", "--account", "801", "--json", "--data-dir", str(data))
        assert shown.returncode == 0, shown.stderr
        items = {d["key"]: d for d in json.loads(shown.stdout)["discrepancies"]}
        assert {(k, d["engine"], d["broker"]) for k, d in items.items()} == {("EURUSD", 10.0, 4.0),
                                                                             ("GBPUSD", 0.0, -3.0)}
        assert told == {("EURUSD", 10.0, 4.0), ("GBPUSD", 0.0, -3.0)}, "strategies are told"
        human = run_cli("reconcile", "--account", "801", "--data-dir", str(data)).stdout
        assert f"[{items['EURUSD']['id']}] position EURUSD: engine 10.0  broker 4.0" in human
        adopted = run_cli("reconcile", "--account", "801", "--adopt", str(items["GBPUSD"]["id"]),
                          "--data-dir", str(data))
        assert adopted.returncode == 0 and "adopted" in adopted.stdout
        ignored = run_cli("reconcile", "--account", "801", "--ignore", str(items["EURUSD"]["id"]),
                          "--data-dir", str(data))
        assert ignored.returncode == 0
        after = json.loads(run_cli("reconcile", "--account", "801", "--json", "--data-dir", str(data)).stdout)
        assert after["discrepancies"] == []
        faultstats.record(faults=2, orders=1)
        assert [(a["action"], a["detail"]["key"]) for a in after["audit"]] == [
            ("reconcile_adopt", "GBPUSD"), ("reconcile_ignore", "EURUSD")]
        assert all(a["detail"]["by"].startswith("cli:") for a in after["audit"])
        positions = {p["epic"]: p["qty"] for p in engine.account_status("801")["portfolio"]["positions"]}
        assert positions["GBPUSD"] == -3.0 and positions["EURUSD"] == 10.0
        bad = run_cli("reconcile", "--account", "801", "--adopt", "999", "--data-dir", str(data))
        assert bad.returncode == 2 and "no open discrepancy 999" in bad.stderr
        assert engine.interrupt() == 0
    finally:
        engine.kill()
        admin.stop()
