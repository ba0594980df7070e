"""Parity: the example strategies place and fill the same orders in a backtest and in a live
run (``maotrade start``, real processes) on a paper account replaying the same bars."""
from __future__ import annotations

import json
import math
import random
import sqlite3

import pytest
from cryptography.fernet import Fernet

from maotrade.backtest import Backtest, BacktestConfig, load_bars
from maotrade.examples.ma_cross import MovingAverageCross
from maotrade.examples.rsi import RsiReversion
from tests.engine_kit import AdminService, EngineProcess
from tests.kit import wait_until

COMMISSION, SLIPPAGE, BALANCE = 0.0002, 0.0001, 10_000.0
STRATEGIES = {
    "ma": (MovingAverageCross, {"fast": 5, "slow": 15, "qty": 1000, "stop_loss": 0.004, "take_profit": 0.006}),
    "rsi": (RsiReversion, {"period": 7, "oversold": 35, "overbought": 65, "qty": 1000, "stop_loss": 0.004}),
}


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory):
    """240 one-minute bars: a seeded random walk with swings, so both strategies trade often."""
    path = tmp_path_factory.mktemp("replay") / "eurusd.csv"
    rng, price, lines = random.Random(11), 1.1, ["date,open,high,low,close,volume"]
    for i in range(240):
        open_ = price
        price *= math.exp(rng.gauss(0, 0.0012) + 0.0009 * math.sin(i / 9))
        high, low = max(open_, price) * (1 + rng.random() * 0.001), min(open_, price) * (1 - rng.random() * 0.001)
        lines.append(f"{1_704_067_200 + 60 * i},{open_!r},{high!r},{low!r},{price!r},{rng.randint(1, 99)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def admin(tmp_path_factory, bars_file):
    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(),
           "MAOTRADE_ADMIN_TOKEN": "test-token-long-enough-for-a-test-0123456789",
           "MAOTRADE_CONFIG_TOKEN": "config-read-token-long-enough-0123456789"}
    service = AdminService(tmp_path_factory.mktemp("admin"), env)
    config = {"replay_file": str(bars_file), "replay_epic": "EURUSD", "replay_time_frame": 60,
              "replay_slippage": SLIPPAGE, "commission": COMMISSION, "price_interval": 0.05}
    service.cli("broker", "add", "replay", "--class", "paper.PaperAccountManager", "--config", json.dumps(config))
    service.cli("account", "add", "601", "--broker", "replay", "--config", json.dumps({"initial_balance": BALANCE}))
    service.cli("mapping", "set", "601", "EURUSD", "EURUSD")
    yield service
    service.stop()


def order_row(order: dict) -> tuple:
    keys = ("epic", "qty", "order_type", "action", "price", "stop_loss", "take_profit", "source", "status",
            "filled_qty", "avg_fill_price", "reason")
    return tuple(order[k] for k in keys)


def query(path, sql):
    db = sqlite3.connect(str(path))
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def replay_state(data_dir) -> dict:
    path = data_dir / "paper" / "account-601.sqlite"
    if not path.exists():
        return {}
    try:
        rows = query(path, "SELECT value FROM meta WHERE key = 'replay'")
    except sqlite3.OperationalError:  # the worker is still creating its record
        return {}
    return json.loads(rows[0][0]) if rows else {}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_live_replay_matches_backtest(name, admin, bars_file, tmp_path):
    cls, params = STRATEGIES[name]
    bars = load_bars([bars_file], "EURUSD", 60)
    expected = Backtest(cls(dict(params)), bars, BacktestConfig(
        "EURUSD", 60, initial_balance=BALANCE, commission=COMMISSION, slippage=SLIPPAGE, account="601")).run()
    assert expected.metrics["trades"] >= 3, "the series must make the strategy trade"
    assert any(o.is_leg and o.filled_qty for o in expected.orders), "and hit a stop loss or take profit"

    target = f"{cls.__module__}:{cls.__name__}"
    extra = ["--strategy", target] + [a for k, v in params.items() for a in ("--param", f"{k}={json.dumps(v)}")]
    engine = EngineProcess(tmp_path / "engine", ["601"], *extra, env=admin.env, config_url=admin.url)
    try:
        wait_until(lambda: replay_state(engine.data_dir).get("finished"), 60, interval=0.05,
                   what="the replay to reach the end of the file")
        journal = engine.data_dir / "journal.sqlite"
        broker_fills = sum(len(o.fills) for o in expected.orders)
        wait_until(lambda: query(journal, "SELECT COUNT(*) FROM fills WHERE account = '601'")[0][0] >= broker_fills,
                   20, interval=0.05, what="the engine to journal every fill")
        live_orders = [json.loads(d) for (d,) in query(journal, "SELECT data FROM orders WHERE account = '601'")]
        live_fills = query(journal, "SELECT exec_id, ABS(qty), price, time, commission FROM fills "
                                    "WHERE account = '601'")
        assert engine.interrupt() == 0
    finally:
        engine.kill()
    assert sorted(map(order_row, live_orders), key=repr) == sorted(
        (order_row(o.to_dict()) for o in expected.orders), key=repr)
    assert sorted(live_fills) == sorted((f.exec_id, f.qty, f.price, f.time, f.commission)
                                        for _, f in expected.fills)
