"""Abstract fixtures of the contract suite, overridden per broker by its rig.

Every scenario module gets, for each broker in turn, one running broker fake (``rig``) and
one ``maotrade start`` on an account at that broker (``engine``), shared by the module's
scenarios: each scenario uses its own client order ids and leaves the market as it found it.
"""
from __future__ import annotations

import itertools

import pytest

from tests.contract.rigs import RIGS, wait_connected
from tests.engine_kit import engine_on_account

_ACCOUNTS = itertools.count(1)
READY_AFTER_OUTAGE_S = 110  # under the suite's 120 s per-test timeout


@pytest.fixture(scope="module", params=sorted(RIGS))
def rig(request, tmp_path_factory):
    """The broker under test, running."""
    workdir = tmp_path_factory.mktemp(f"contract-{request.param}")
    running = RIGS[request.param](workdir, account=f"{80 + next(_ACCOUNTS)}").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def engine(rig, tmp_path_factory):
    """``maotrade start`` with one account on the rig's broker, ready; its bus client is the strategy."""
    document = rig.document()
    document["epicMapping"] = {rig.epic: document["epicMapping"][rig.epic]}
    admin, running = engine_on_account(document, tmp_path_factory.mktemp(f"engine-{rig.name}"))
    try:
        running.wait_ready(rig.account, timeout=90)
        yield running
    finally:
        running.kill()
        admin.stop()


@pytest.fixture
def market(rig, engine):
    """The account ready and the market at the rig's reference price, before and after a scenario."""
    wait_connected(rig)
    # After an outage a broker may first have to wait out its own request allowance (IG's
    # non-trading requests per minute, spent on reconnects) before the engine can sync.
    engine.wait_ready(rig.account, timeout=READY_AFTER_OUTAGE_S)
    rig.reset_price()
    yield rig
    rig.reset_price()
