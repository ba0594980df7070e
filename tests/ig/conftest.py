"""Fixtures of the IG tests: a simulator on a free port and IG workers pointed at it."""
from __future__ import annotations

import pytest

from tests.ig.simulator import IGSimulator
from tests.kit import IG_EPICS as EPICS, WorkerHarness, ig_document  # EPICS: for importers of this module

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
