"""Fixtures of the IG tests: a simulator on a free port and IG workers pointed at it."""
from __future__ import annotations

import pytest

from tests.ig.simulator import IGSimulator
from tests.kit import WorkerHarness

EPICS = {"EURUSD": "CS.D.EURUSD.CFD.IP", "GBPUSD": "CS.D.GBPUSD.CFD.IP", "FTSE": "IX.D.FTSE.DAILY.IP"}


def ig_document(sim: IGSimulator, account: str = "701", ig_account: str = "XYZ02", **broker) -> dict:
    """An IG account document aimed at ``sim`` with fast timeouts for tests."""
    config = {"endpoint_demo": sim.rest_url, "endpoint_prod": "http://127.0.0.1:9/unused",
              "timeout": 2.0, "reconnect_base": 0.2, "reconnect_max": 1.0, "max_retries": 20,
              "order_timeout": 3.0, "stream_keepalive_ms": 300, "stream_stalled_ms": 300,
              "stream_reconnect_ms": 300,
              "confirm_interval": 0.05, "stream_connect_timeout": 5.0}
    config.update(broker)
    return {"idAccount": account, "brokerName": "ig", "brokerClass": "ig.IGAccountManager",
            "brokerConfig": config,
            "accountConfig": {"user": sim.user, "password": sim.password, "apiKey": sim.api_key,
                              "accountId": ig_account, "demo": True},
            "epicMapping": dict(EPICS)}


@pytest.fixture
def sim():
    """A running IG simulator."""
    with IGSimulator() as simulator:
        yield simulator


@pytest.fixture
def ig_worker(sim, tmp_path):
    """An IG Account Manager process logged in to ``sim``."""
    with WorkerHarness(ig_document(sim), tmp_path) as harness:
        init = harness.wait_type("init_result", timeout=20)
        assert init["ok"] is True
        harness.wait_type("connection", state="connected")
        yield harness
    repeated = {ref: n for ref, n in sim.deal_references.items() if n != 1}
    assert not repeated, f"deals sent more than once: {repeated}"
