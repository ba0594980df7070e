"""Shared fixtures."""
from __future__ import annotations

import os

import pytest

# The test brokers (tests/brokers) are operator-approved for every engine and worker the
# tests start; tests of the allowlist itself set or clear this.
os.environ.setdefault("MAOTRADE_ALLOW_BROKER_CLASS", "tests.brokers.*")

from tests.kit import WorkerHarness, paper_document  # noqa: E402 - after the allowlist is set


@pytest.fixture
def paper_worker(tmp_path):
    """A running paper Account Manager process."""
    with WorkerHarness(paper_document(), tmp_path) as harness:
        harness.wait_type("init_result", timeout=20)
        yield harness


def pytest_terminal_summary(terminalreporter):
    """Print the fault-injection figures when fault tests ran."""
    from tests.faultstats import totals
    passed = [r for r in terminalreporter.stats.get("passed", []) if "fault" in r.keywords]
    if passed:
        terminalreporter.write_line(
            f"fault suite: {len(passed)} cases passed, {totals['faults']} faults injected, "
            f"{totals['orders']} orders checked against the broker's record, "
            f"{totals['discrepancies']} discrepancies")


def pytest_sessionfinish(session):
    """On a parallel (xdist) worker: hand this worker's fault figures to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from tests.faultstats import totals
        workeroutput["faultstats"] = dict(totals)


class _FaultFiguresFromWorkers:
    """On the xdist controller: add each worker's fault figures to the printed totals."""

    def pytest_testnodedown(self, node, error):
        from tests.faultstats import totals
        totals.update(getattr(node, "workeroutput", {}).get("faultstats", {}))


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_FaultFiguresFromWorkers())
