"""Guarantees 3, 5 and 6: reconnect as one step, stale data as an event, one account's
trouble stays in that account."""
from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest
from cryptography.fernet import Fernet

from tests import faultstats
from tests.engine_kit import AdminService, EngineProcess
from tests.kit import wait_until

pytestmark = pytest.mark.fault


@pytest.fixture
def env():
    return {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(),
            "MAOTRADE_ADMIN_TOKEN": "t-long-enough-for-a-test-0123456789",
            "MAOTRADE_CONFIG_TOKEN": "config-read-token-long-enough-0123456789",
            "MAOTRADE_ALLOW_BROKER_CLASS": "tests.brokers.*"}


@pytest.fixture
def admin(tmp_path, env):
    service = AdminService(tmp_path / "admin", env)
    yield service
    service.stop()


def add_paper(admin, account, broker_class="paper.PaperAccountManager", **config):
    """Register ``account`` on a paper broker (or a paper-based one from tests/brokers) trading EURUSD."""
    admin.cli("broker", "add", f"paper{account}", "--class", broker_class,
              "--config", json.dumps({"seed": 9, "price_interval": 0.05, **config}))
    admin.cli("account", "add", account, "--broker", f"paper{account}")
    admin.cli("mapping", "set", account, "EURUSD", "EURUSD")


def round_trip(engine, account, key):
    mark = engine.mark()
    started = time.monotonic()
    engine.send("order_open", account=account, client_order_id=key, epic="EURUSD", qty=1)
    engine.wait_order(key, "FILLED", since=mark)
    return time.monotonic() - started


def events(engine, kind, since=0):
    engine.collect()
    return [m for m in engine.received[since:] if m.get("type") == kind]


def test_outage_refuses_orders_marks_data_stale_then_recovers_in_one_step(admin, env, tmp_path):
    outage = tmp_path / "outage"
    add_paper(admin, "701", outage_file=str(outage), reconnect_base=0.3, reconnect_max=0.6, max_retries=100)
    engine = EngineProcess(tmp_path / "e", ["701"], env=env, config_url=admin.url)
    try:
        engine.wait_ready("701")
        engine.send("subscribe", account="701", epic="EURUSD", time_frame=1)
        wait_until(lambda: events(engine, "market_data"), 10, what="bars")
        round_trip(engine, "701", "before")
        outage.touch()
        wait_until(lambda: engine.account_status("701")["state"] == "reconnecting", 10, what="reconnecting")
        engine.send("order_open", account="701", client_order_id="during", epic="EURUSD", qty=1)
        refused = engine.wait_order("during", "REJECTED")
        assert refused["code"] == "account_not_ready" and "reconnecting" in refused["reason"]
        stale = wait_until(lambda: [e for e in events(engine, "stale_data") if e["stale"]], 15, what="stale event")
        assert stale[0]["epic"] == "EURUSD" and stale[0]["silent_s"] >= 7  # the threshold: 2 bars of 1 s + 5 s grace
        assert engine.account_status("701")["stale_data"] == [{"epic": "EURUSD", "time_frame": 1}]
        mark = engine.mark()
        outage.unlink()
        wait_until(lambda: engine.account_status("701")["state"] == "ready", 15, what="ready again")
        wait_until(lambda: [e for e in events(engine, "stale_data", mark) if not e["stale"]], 10,
                   what="stale cleared")
        states = [e["state"] for e in events(engine, "account_status", mark)]
        assert states.index("syncing") < states.index("ready"), states
        round_trip(engine, "701", "after")
        faultstats.record(faults=1, orders=3)
        assert engine.account_status("701")["stale_data"] == []
        assert engine.interrupt() == 0
    finally:
        engine.kill()


def test_hung_worker_never_delays_another_account_and_is_restarted(admin, env, tmp_path):
    add_paper(admin, "711")
    add_paper(admin, "712")
    engine = EngineProcess(tmp_path / "e", ["711", "712"], "--heartbeat-timeout", "3", env=env,
                           config_url=admin.url)
    try:
        hung = engine.wait_ready("711")
        engine.wait_ready("712")
        os.kill(hung["pid"], signal.SIGSTOP)
        # Orders on the healthy account keep their usual pace while the other one hangs.
        worst = max(round_trip(engine, "712", f"h{i}") for i in range(20))
        assert worst < 1.0, f"healthy account delayed {worst:.3f}s by a hung neighbour"
        engine.send("order_open", account="711", client_order_id="to-hung", epic="EURUSD", qty=1)
        after = wait_until(lambda: (lambda s: s if s["pid"] not in (None, hung["pid"]) and s["state"] == "ready"
                                    else None)(engine.account_status("711")), 30, interval=0.2,
                           what="hung worker replaced")
        assert after["restarts"] == 1 and not psutil.pid_exists(hung["pid"]) or \
            psutil.Process(hung["pid"]).status() == psutil.STATUS_ZOMBIE
        # The order sent to the hung worker is resolved, never left in doubt.
        resolved = engine.wait_order("to-hung", {"FILLED", "REJECTED"})
        assert resolved["status"] in ("FILLED", "REJECTED")
        round_trip(engine, "711", "after-restart")
        faultstats.record(faults=1, orders=22)
        assert engine.interrupt() == 0
    finally:
        engine.kill()


def test_flooding_worker_and_slow_strategy_never_block_orders(admin, env, tmp_path):
    admin.cli("broker", "add", "flood", "--class", "tests.brokers.flood.FloodAccountManager",
              "--config", json.dumps({"bars": 20_000_000, "completed": False}))
    admin.cli("account", "add", "721", "--broker", "flood")
    add_paper(admin, "722")
    record = tmp_path / "slow.jsonl"
    engine = EngineProcess(tmp_path / "e", ["721", "722"], "--strategy", "tests.strategies:SlowStrategy",
                           "--param", f"record={record}", "--param", "flood_account=721",
                           "--param", "order_account=722", env=env, config_url=admin.url)
    try:
        engine.wait_ready("722")
        wait_until(lambda: record.exists() and "FILLED" in record.read_text(), 30, what="slow strategy's fill")
        # While the flood goes on and the slow strategy lags, another client's orders are prompt.
        worst = max(round_trip(engine, "722", f"f{i}") for i in range(20))
        assert "STALE" not in engine.output(), "the flood should still be running"
        assert worst < 1.0, f"orders delayed {worst:.3f}s by a flood"
        clients = {c["name"]: c for c in engine.status()["clients"]}
        slow = next(c for name, c in clients.items() if name.startswith("SlowStrategy"))
        assert slow["conflated"] > 0, "a slow consumer should get conflated market data"
        assert engine.interrupt() == 0
        orders = [json.loads(line) for line in record.read_text().splitlines()]
        assert [o["status"] for o in orders if o["event"] == "order"][-1] == "FILLED"
        faultstats.record(faults=2, orders=21)
    finally:
        engine.kill()


def test_a_sync_request_the_worker_dropped_is_asked_again_and_the_account_gets_ready(admin, env, tmp_path):
    """The worker answers the engine's first portfolio request with an error (as IG does out
    of request allowance): the engine asks again instead of staying `syncing` for good."""
    add_paper(admin, "721", broker_class="tests.brokers.forgetful.ForgetfulAccountManager")
    engine = EngineProcess(tmp_path / "e", ["721"], env=env, config_url=admin.url)
    try:
        engine.wait_ready("721", 20)
        round_trip(engine, "721", "after")
        faultstats.record(faults=1, orders=1)
        assert engine.interrupt() == 0
    finally:
        engine.kill()


def test_stopping_with_an_order_the_broker_never_answered_says_so(admin, env, tmp_path):
    """Ctrl-C while an order is out with a broker that has not answered: the operator is
    told which order may still execute, and the next start asks the broker about it."""
    add_paper(admin, "723", broker_class="tests.brokers.silent.SilentAccountManager")
    engine = EngineProcess(tmp_path / "e", ["723"], env=env, config_url=admin.url)
    try:
        engine.wait_ready("723", 20)
        mark = engine.mark()
        engine.send("order_open", account="723", client_order_id="quiet-1", epic="EURUSD", qty=2)
        engine.wait_order("quiet-1", "NEW", since=mark)
        assert engine.interrupt() == 0
        warning = [line for line in engine.output().splitlines() if "quiet-1" in line and "may still" in line]
        assert len(warning) == 1 and "723 EURUSD 2 NEW" in warning[0], engine.output()[-2000:]
        faultstats.record(faults=1)
    finally:
        engine.kill()
