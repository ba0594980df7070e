"""Fixtures of the ccxt tests: a local Binance-protocol exchange and workers aimed at it.

For the shared contract suite: ``exchange`` starts a server (spot by default, USD-M
with ``@pytest.mark.parametrize("exchange", ["usdm"], indirect=True)``) and
``ccxt_document(server)`` returns the account document of a worker trading on it.
"""
from __future__ import annotations

import pytest

from tests.ccxt.exchange_server import SPOT, USDM, ExchangeServer
from tests.kit import WorkerHarness

SYMBOLS = {SPOT: "BTC/USDT", USDM: "BTC/USDT:USDT"}
EPICS = {SPOT: "BTCUSD", USDM: "BTCUSD_PERP"}


def ccxt_document(server: ExchangeServer, account: str = "901", **broker) -> dict:
    """The account document of a ccxt worker trading on ``server``, with fast timeouts."""
    config = {"exchange": "binance" if server.venue == SPOT else "binanceusdm", "urls": server.urls(),
              "timeout": 3.0, "reconnect_base": 0.2, "reconnect_max": 1.0, "max_retries": 20,
              "order_timeout": 5.0, "poll_interval": 0.3, "stream_retry": 0.2, "status_delay": 0.1,
              "time_frames": [1, 60]}
    config.update(broker)
    return {"idAccount": account, "brokerName": "ccxt", "brokerClass": "ccxt.CCXTAccountManager",
            "brokerConfig": config,
            "accountConfig": {"apiKey": server.api_key, "secret": server.secret},
            "epicMapping": {EPICS[server.venue]: SYMBOLS[server.venue]}}


@pytest.fixture(params=[SPOT])
def exchange(request):
    """A running local exchange (venue from the parameter: spot or usdm)."""
    with ExchangeServer(request.param) as server:
        yield server


@pytest.fixture
def ccxt_worker(exchange, tmp_path):
    """A ccxt Account Manager process connected to ``exchange``."""
    with WorkerHarness(ccxt_document(exchange), tmp_path) as harness:
        init = harness.wait_type("init_result", timeout=30)
        assert init["ok"] is True
        harness.wait_type("connection", state="connected")
        harness.wait_for(lambda m: exchange.user_subscriptions > 0, 10, what="user data stream")
        yield harness
    repeated = {cid: n for cid, n in exchange.order_posts.items() if n != 1}
    assert not repeated, f"orders sent more than once: {repeated}"
