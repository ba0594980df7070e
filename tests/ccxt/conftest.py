"""Fixtures of the ccxt tests: a local Binance-protocol exchange and workers aimed at it.

``exchange`` starts a server (spot by default, USD-M with
``@pytest.mark.parametrize("exchange", ["usdm"], indirect=True)``);
``tests.ccxt.accounts.ccxt_document(server)`` is the account document of a worker on it,
and ``tests.contract.rigs.CCXTRig`` the contract suite's rig.
"""
from __future__ import annotations

import pytest

from tests.ccxt.accounts import ccxt_document
from tests.ccxt.exchange_server import SPOT, ExchangeServer
from tests.kit import WorkerHarness


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
