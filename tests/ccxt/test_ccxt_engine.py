"""The whole engine trading on the local exchange through the ccxt Account Manager: admin
service, ``maotrade start``, a worker per account, a strategy process, real ccxt."""
from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from tests.ccxt.accounts import EPICS, EXCHANGE_IDS, SYMBOLS
from tests.ccxt.aster_server import AsterExchangeServer
from tests.ccxt.exchange_server import ASTER, SPOT, USDM, ExchangeServer
from tests.engine_kit import AdminService, EngineProcess
from tests.kit import wait_until


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("venue", [SPOT, USDM, ASTER])
def test_strategy_trades_on_the_exchange_and_the_books_agree(venue, tmp_path):
    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(),
           "MAOTRADE_ADMIN_TOKEN": "test-token-long-enough-for-a-test-0123456789",
           "MAOTRADE_CONFIG_TOKEN": "config-read-token-long-enough-0123456789"}
    with (AsterExchangeServer() if venue == ASTER else ExchangeServer(venue)) as exchange:
        exchange.start_walk(0.05)
        admin = AdminService(tmp_path / "admin", env)
        engine = None
        try:
            config = {"exchange": EXCHANGE_IDS[venue], "urls": exchange.urls(),
                      "time_frames": [1, 60], "reconnect_base": 0.5, "order_timeout": 5, "poll_interval": 0.3}
            admin.cli("broker", "add", "crypto", "--class", "ccxt.CCXTAccountManager", "--config", json.dumps(config))
            # Aster signs with a wallet key (EIP-712); Binance with an API key and HMAC secret.
            secret = exchange.private_key if venue == ASTER else exchange.secret
            credentials = {"privateKey": secret} if venue == ASTER else {"apiKey": exchange.api_key, "secret": secret}
            admin.cli("account", "add", "911", "--broker", "crypto", "--config", json.dumps(credentials))
            admin.cli("mapping", "set", "911", EPICS[venue], SYMBOLS[venue])
            record = tmp_path / "strategy.jsonl"
            engine = EngineProcess(tmp_path / "engine", ["911"], "--strategy", "tests.strategies:RecordingStrategy",
                                   "--param", f"record={record}", "--param", "qty=0.01",
                                   "--param", f"epic={EPICS[venue]}", env=env, config_url=admin.url)
            wait_until(lambda: [r for r in records(record) if r["event"] == "portfolio" and r["positions"]],
                       60, interval=0.1, what="strategy portfolio after its fill")
            seen = records(record)
            assert [b for b in seen if b["event"] == "bar" and b["completed"] and b["epic"] == EPICS[venue]]
            sent = next(r for r in seen if r["event"] == "sent")["client_order_id"]
            filled = next(r for r in seen if r["event"] == "order" and r["status"] == "FILLED")
            assert filled["client_order_id"] == sent and filled["filled_qty"] == 0.01
            book = exchange.record()
            [server_order] = [o for o in book["orders"] if o["client_order_id"] == sent]
            assert server_order["status"] == "FILLED" and book["order_posts"][sent] == 1
            assert filled["avg_fill_price"] == pytest.approx(server_order["avg_price"])
            [position] = next(r for r in seen if r["event"] == "portfolio" and r["positions"])["positions"]
            assert position["qty"] == pytest.approx(0.01)
            if venue in (USDM, ASTER):
                assert book["position"]["qty"] == pytest.approx(0.01)
                assert position["avg_price"] == pytest.approx(book["position"]["entry_price"])
            else:
                assert book["balances"]["BTC"] == pytest.approx(0.01)
            assert secret not in engine.output()
        finally:
            if engine is not None:
                engine.kill()
            admin.stop()
