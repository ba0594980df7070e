"""Fixtures: a fake TWS on a free loopback port and an IB Account Manager process."""
from __future__ import annotations

import pytest

from tests.ib.fake_tws import FakeTWS
from tests.kit import WorkerHarness

MAPPING = {"SPY": "SPY-USD-STK-SMART", "EURUSD": "EUR-USD-CASH-IDEALPRO",
           "ES_FUT": "ES-USD-FUT-CME-202412", "AAPL": "AAPL-USD-STK-SMART",
           "NOPE": "NOPE-USD-STK-SMART"}


def ib_document(port: int, account: str = "41", client_id: int = 11, **broker) -> dict:
    """An IB account document pointing at the fake TWS, with fast reconnects."""
    config = {"tws_host": "127.0.0.1", "tws_port": port, "client_id": client_id, "timeout": 3.0,
              "reconnect_base": 0.2, "reconnect_max": 1.0, "max_retries": 20,
              "order_timeout": 5.0, "commission_wait": 1.0}
    config.update(broker)
    return {"idAccount": account, "brokerName": "ib", "brokerClass": "ib.IBAccountManager",
            "brokerConfig": config, "accountConfig": {"account": "DU123456"},
            "epicMapping": dict(MAPPING)}


@pytest.fixture
def fake_tws():
    """A running fake TWS; stopped after the test."""
    server = FakeTWS(bar_interval=0.02, tick_interval=0.05).start()
    yield server
    server.stop()


@pytest.fixture
def ib_worker(fake_tws, tmp_path):
    """A connected IB Account Manager process talking to ``fake_tws``."""
    with WorkerHarness(ib_document(fake_tws.port), tmp_path) as harness:
        harness.wait_type("connection", state="connected", timeout=20)
        yield harness
