"""The account document of a ccxt worker on the local exchange (tests and the contract rig)."""
from __future__ import annotations

from tests.ccxt.exchange_server import SPOT, USDM, ExchangeServer

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
