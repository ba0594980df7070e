"""Fixtures of the Kite tests: a local Kite Connect on a free port and workers aimed at it.

``kite_broker`` is the plug for shared suites: it starts the server and returns
``(server, document)``, a Kite account document with a live access token.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from typing import Iterator

import pytest

from tests.kit import WorkerHarness
from tests.kite.server import KiteServer

EPICS = {"INFY": "NSE:INFY", "RELIANCE": "NSE:RELIANCE", "SBIN": "NSE:SBIN"}


def always_open_zone() -> str:
    """A time zone in which now is far from midnight (sessions here run 00:00-23:59)."""
    return "UTC" if 1 <= dt.datetime.now(dt.timezone.utc).hour <= 22 else "Asia/Kolkata"


def kite_document(server: KiteServer, account: str = "801", access_token: str = "", **broker) -> dict:
    """A Kite account document aimed at ``server``: market open all week, fast timeouts."""
    config = {"api_root": server.api_root, "ticker_root": server.ticker_root, "timeout": 3.0,
              "reconnect_base": 0.2, "reconnect_max": 1.0, "max_retries": 20, "order_timeout": 4.0,
              "market_open": "00:00", "market_close": "23:59", "market_timezone": always_open_zone(),
              "trading_days": [0, 1, 2, 3, 4, 5, 6], "poll_interval": 0.3, "token_check_interval": 0.2,
              "ticker_connect_timeout": 5.0, "tick_mode": "quote"}
    config.update(broker)
    return {"idAccount": account, "brokerName": "kite", "brokerClass": "kite.KiteAccountManager",
            "brokerConfig": config,
            "accountConfig": {"api_key": server.api_key, "api_secret": server.api_secret,
                              "access_token": access_token or server.issue_access_token(),
                              "user_id": server.user_id},
            "epicMapping": dict(EPICS)}


@contextlib.contextmanager
def kite_broker_document(**broker) -> Iterator[tuple[KiteServer, dict]]:
    """Start a local Kite; yield it and an account document logged in to it."""
    with KiteServer() as server:
        yield server, kite_document(server, **broker)


@pytest.fixture
def kite_broker():
    """A running local Kite and an account document for it: ``(server, document)``."""
    with kite_broker_document() as pair:
        yield pair


@pytest.fixture
def kite_server(kite_broker):
    """The running local Kite."""
    return kite_broker[0]


@pytest.fixture
def kite_worker(kite_broker, tmp_path):
    """A Kite Account Manager process connected to the local Kite."""
    server, document = kite_broker
    with WorkerHarness(document, tmp_path) as harness:
        init = harness.wait_type("init_result", timeout=30)
        assert init["ok"] is True
        harness.wait_type("connection", state="connected")
        yield harness
    repeated = {tag: n for tag, n in server.placed_tags.items() if n != 1}
    assert not repeated, f"orders placed more than once: {repeated}"
