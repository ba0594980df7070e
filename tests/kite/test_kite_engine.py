"""The whole engine on a Kite account: the registry and the daily login through the real
CLI, ``maotrade start`` running the demo strategy against the local Kite, and the
engine's journal agreeing with the broker's record."""
from __future__ import annotations

import json
import sqlite3

import pytest
from cryptography.fernet import Fernet

from account_managers.kite.session import read_token, token_path
from maotrade.secrets import ENCRYPTED_PREFIX
from tests.engine_kit import EngineProcess, run_cli
from tests.kit import wait_until
from tests.kite.conftest import always_open_zone
from tests.kite.server import KiteServer

pytestmark = pytest.mark.slow


@pytest.fixture
def env():
    return {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode()}


def _cli(env, *args):
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def register_kite_account(data_dir, env, server: KiteServer, account: str = "801") -> str:
    """Register broker, account and mapping with the CLI, then log in; return the output."""
    broker = {"api_root": server.api_root, "ticker_root": server.ticker_root, "market_open": "00:00",
              "market_close": "23:59", "market_timezone": always_open_zone(),
              "trading_days": [0, 1, 2, 3, 4, 5, 6], "reconnect_base": 0.5, "order_timeout": 5}
    d = ["--data-dir", str(data_dir)]
    _cli(env, "admin", "broker", "add", "kite", "--class", "kite.KiteAccountManager",
         "--config", json.dumps(broker), *d)
    _cli(env, "admin", "account", "add", account, "--broker", "kite", "--config",
         json.dumps({"api_key": server.api_key, "api_secret": server.api_secret, "user_id": server.user_id}), *d)
    _cli(env, "admin", "mapping", "set", account, "INFY", "NSE:INFY", *d)
    return _cli(env, "admin", "account", "kite-login", account, "--request-token", server.issue_request_token(), *d)


def test_kite_login_stores_the_token_encrypted_and_refuses_other_brokers(tmp_path, env):
    help_text = _cli(env, "admin", "account", "kite-login", "--help")
    assert "--request-token" in help_text and "--engine-data-dir" in help_text and "06:00 IST" in help_text
    data = tmp_path / "data"
    with KiteServer() as server:
        out = register_kite_account(data, env, server)
        assert "Kite session of user AB1234 stored encrypted" in out
        assert "INFY\tNSE:INFY" in _cli(env, "admin", "mapping", "list", "801", "--data-dir", str(data))
        listed = _cli(env, "admin", "account", "list", "--data-dir", str(data))
        assert '"access_token": "***"' in listed
        db = sqlite3.connect(str(data / "registry.sqlite"))
        [(stored,)] = db.execute("SELECT account_config FROM accounts WHERE id = '801'").fetchall()
        db.close()
        token = json.loads(stored)["access_token"]
        assert token.startswith(ENCRYPTED_PREFIX) and not any(t in stored for t in server.call(lambda: list(server.access_tokens)))
        elsewhere = tmp_path / "engine-elsewhere"
        _cli(env, "admin", "account", "kite-login", "801", "--request-token", server.issue_request_token(),
             "--engine-data-dir", str(elsewhere), "--data-dir", str(data))
        handed = read_token(token_path(elsewhere, "801"), server.api_secret)
        assert handed in server.call(lambda: set(server.access_tokens))
        assert read_token(token_path(data, "801"), server.api_secret) == handed
        again = run_cli("admin", "account", "kite-login", "801", "--request-token", "used-or-wrong",
                        "--data-dir", str(data), env=env)
        assert again.returncode != 0 and "Token is invalid or has expired" in again.stderr
        _cli(env, "admin", "broker", "add", "paper", "--class", "paper.PaperAccountManager", "--data-dir", str(data))
        _cli(env, "admin", "account", "add", "900", "--broker", "paper", "--data-dir", str(data))
        other = run_cli("admin", "account", "kite-login", "900", "--request-token", "x", "--data-dir", str(data), env=env)
        assert other.returncode != 0 and "not a Kite account" in other.stderr


def test_demo_strategy_trades_on_kite_and_the_journal_agrees_with_kite(tmp_path, env):
    data = tmp_path / "data"
    with KiteServer() as server:
        register_kite_account(data, env, server)
        server.start_walk("NSE:INFY", step=0.5, leg=10, interval=0.2)
        engine = EngineProcess(data, ["801"], "--strategy", "maotrade.examples.demo:DemoStrategy",
                               "--param", "epic=INFY", "--param", "qty=10", "--param", "stop_loss=0",
                               "--param", "take_profit=0", env=env)
        try:
            engine.wait_ready("801", timeout=60)
            wait_until(lambda: len(server.snapshot()["trades"]) >= 2, 90, interval=0.2,
                       what="the demo strategy to open and close on Kite")
            server._walk_stop.set()
            record = server.snapshot()
            settled = lambda: _journal(data) if _agrees(_journal(data), record) else None
            orders, fills, position = wait_until(settled, 30, interval=0.2, what="the journal to settle")
        finally:
            engine.kill()
    kite_orders = {o["tag"]: o for o in record["orders"]}
    assert len(orders) == len(kite_orders)
    assert sorted(fills) == sorted(t["trade_id"] for t in record["trades"])
    net = sum(p["quantity"] for p in record["positions"])
    assert position == pytest.approx(net)


def _journal(data):
    db = sqlite3.connect(str(data / "journal.sqlite"))
    try:
        orders = {cid: json.loads(d) for cid, d in db.execute(
            "SELECT client_order_id, data FROM orders WHERE account = '801'")}
        fills = [row[0] for row in db.execute("SELECT exec_id FROM fills WHERE account = '801'")]
        row = db.execute("SELECT qty FROM positions WHERE account = '801' AND epic = 'INFY'").fetchone()
    finally:
        db.close()
    return orders, fills, (row[0] if row else 0.0)


def _agrees(journal, record) -> bool:
    orders, fills, position = journal
    filled = {o["tag"] for o in record["orders"] if o["status"] == "COMPLETE"}
    done = {o["client_order_id"] for o in orders.values() if o["status"] == "FILLED"}
    return (len(done) == len(filled) and len(fills) == len(record["trades"])
            and position == sum(p["quantity"] for p in record["positions"]))
