"""The whole engine on a Kite account: the registry and the daily login through the real
CLI, ``maotrade start`` running the demo strategy against the local Kite, and the bars,
the engine's journal and its position agreeing with the broker's record."""
from __future__ import annotations

import json
import sqlite3

import pytest
from cryptography.fernet import Fernet

from account_managers.kite.parsing import tag_for
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


def register_kite_account(data_dir, env, server: KiteServer, account: str = "801", **config) -> str:
    """Register broker (``config``: more brokerConfig), account and mapping with the CLI,
    then log in; return the output."""
    broker = {"api_root": server.api_root, "ticker_root": server.ticker_root, "market_open": "00:00",
              "market_close": "23:59", "market_timezone": always_open_zone(),
              "trading_days": [0, 1, 2, 3, 4, 5, 6], "reconnect_base": 0.5, "order_timeout": 5, **config}
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


def test_demo_strategy_trades_on_kite_with_bars_orders_and_positions_agreeing_with_kite(tmp_path, env):
    """The issue's done-when: ``maotrade start --account 801`` runs the demo strategy (with
    its own stop loss and take profit, placed by the engine as Kite orders) on the local
    Kite; the bars, the journal's orders and fills and the position agree with Kite's record."""
    data = tmp_path / "data"
    with KiteServer() as server:
        register_kite_account(data, env, server, tick_mode="full")
        server.start_walk("NSE:INFY", step=0.5, leg=10, interval=0.25)
        engine = EngineProcess(data, ["801"], "--strategy", "maotrade.examples.demo:DemoStrategy",
                               "--param", "epic=INFY", "--param", "qty=10", env=env)
        try:
            engine.wait_ready("801", timeout=60)
            engine.send("subscribe", account="801", epic="INFY", time_frame=1)  # the strategy's bars
            # The client reads as it waits: the engine hands it bars as fast as it reads them.
            wait_until(lambda: engine.collect() is not None and _legs_at_kite(data, server)
                       and len(server.snapshot()["trades"]) >= 2 and len(_completed(engine.received)) >= 12,
                       120, interval=0.2, what="the demo strategy to open with its legs and close on Kite")
            server._walk_stop.set()
            journal, record = wait_until(lambda: engine.collect() is not None and _settled(data, server), 30,
                                         interval=0.2, what="the journal and Kite to agree")
            while engine.collect():
                pass
        finally:
            engine.kill()
    orders, _, _ = journal
    assert any(o.get("leg") for o in orders.values()), "the demo strategy's orders carried no legs"
    # From the first tick in full mode on, each tick carries Kite's time, which dates the bars.
    first_full = min(t["time"] for t in record["ticks"] if t["mode"] == "full")
    bars = [m for m in _completed(engine.received) if m["date"] > first_full * 1000]
    assert len(bars) >= 10, f"only {len(bars)} completed bars reached the client"
    for bar in bars:
        assert _bar_of_ticks(bar, record["ticks"]) == {k: bar[k] for k in ("open", "high", "low", "close", "volume")}


def _settled(data, server: KiteServer):
    """(journal, Kite's record) once they agree, else None."""
    journal, record = _journal(data), server.snapshot()
    return (journal, record) if not _disagreements(journal, record) else None


def _completed(received: list[dict]) -> list[dict]:
    """The completed bars among the messages a client received."""
    return [m for m in received if m.get("type") == "market_data" and m.get("completed")]


def _legs_at_kite(data, server: KiteServer) -> bool:
    """True once Kite holds a bracket leg the engine placed (the tag of a ``/SL`` or ``/TP`` id)."""
    legs = [cid for cid, order in _journal(data)[0].items() if order.get("leg")]
    tags = {o["tag"] for o in server.snapshot()["orders"]}
    return any(tag_for(cid) in tags for cid in legs)


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


# Kite's order states -> the journal's, once both have settled.
_SETTLED = {"COMPLETE": "FILLED", "CANCELLED": "CANCELLED", "REJECTED": "REJECTED", "OPEN": "ACCEPTED",
            "TRIGGER PENDING": "ACCEPTED"}


def _disagreements(journal, record) -> list[str]:
    """How the journal differs from Kite's record, order by order (empty: they agree)."""
    orders, fills, position = journal
    kite = {o["tag"]: o for o in record["orders"]}
    out = []
    for cid, order in orders.items():
        row = kite.pop(tag_for(cid), None)
        if row is None:
            out.append(f"{cid} {order['status']} is not at Kite")
        elif (_SETTLED.get(row["status"]), row["filled_quantity"]) != (order["status"], abs(order["filled_qty"])):
            out.append(f"{cid}: journal {order['status']} {order['filled_qty']:g}, Kite {row['status']} "
                       f"{row['filled_quantity']}")
    out += [f"Kite order {row['order_id']} (tag {tag}) is not in the journal" for tag, row in kite.items()]
    if sorted(fills) != sorted(t["trade_id"] for t in record["trades"]):
        out.append(f"fills {sorted(fills)} != Kite trades {sorted(t['trade_id'] for t in record['trades'])}")
    net = sum(p["quantity"] for p in record["positions"])
    if position != pytest.approx(net):
        out.append(f"position {position:g} != Kite net {net}")
    return out


def _bar_of_ticks(bar: dict, ticks: list[dict]) -> dict:
    """The one-second bar Kite's ticks make for ``bar``'s second: prices of the ticks
    stamped in it, volume the growth of the day's volume since the tick before it."""
    token = 408065  # NSE:INFY
    mine = [t for t in ticks if t["instrument_token"] == token]
    inside = [t for t in mine if t["time"] * 1000 == bar["date"]]
    assert inside, f"no tick of Kite's falls in the bar {bar}"
    before = [t for t in mine if t["time"] * 1000 < bar["date"]]
    base = before[-1]["volume"] if before else inside[0]["volume"]
    prices = [t["price"] for t in inside]
    return {"open": prices[0], "high": max(prices), "low": min(prices), "close": prices[-1],
            "volume": inside[-1]["volume"] - base}
