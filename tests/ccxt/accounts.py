"""The account document of a ccxt worker on the local exchange (tests and the contract rig)."""
from __future__ import annotations

from tests.ccxt.exchange_server import ASTER, SPOT, USDM, ExchangeServer

SYMBOLS = {SPOT: "BTC/USDT", USDM: "BTC/USDT:USDT", ASTER: "BTC/USDT:USDT"}
EPICS = {SPOT: "BTCUSD", USDM: "BTCUSD_PERP", ASTER: "BTCUSD_PERP"}
EXCHANGE_IDS = {SPOT: "binance", USDM: "binanceusdm", ASTER: "aster"}


def ccxt_document(server: ExchangeServer, account: str = "901", **broker) -> dict:
    """The account document of a ccxt worker trading on ``server``, with fast timeouts."""
    config = {"exchange": EXCHANGE_IDS[server.venue], "urls": server.urls(),
              "timeout": 3.0, "reconnect_base": 0.2, "reconnect_max": 1.0, "max_retries": 20,
              "order_timeout": 5.0, "poll_interval": 0.3, "stream_retry": 0.2, "status_delay": 0.1,
              "time_frames": [1, 60]}
    config.update(broker)
    return {"idAccount": account, "brokerName": "ccxt", "brokerClass": "ccxt.CCXTAccountManager",
            "brokerConfig": config,
            "accountConfig": ({"privateKey": server.private_key} if server.venue == ASTER
                              else {"apiKey": server.api_key, "secret": server.secret}),
            "epicMapping": {EPICS[server.venue]: SYMBOLS[server.venue]}}
