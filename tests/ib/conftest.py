"""Fixtures: a fake TWS on a free loopback port and an IB Account Manager process."""
from __future__ import annotations

import pytest

from tests.ib.fake_tws import FakeTWS
from tests.kit import WorkerHarness, ib_document

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
