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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Keep the tests that share a module-scoped fixture on one xdist worker.

    Under ``pytest -n N --dist loadgroup`` (scripts/test) a module's engine, stack or browser
    then starts once per module (and per parameter of a parametrized one, such as each
    contract rig) rather than once on every worker; tests without such a fixture are spread
    one by one.
    """
    for item in items:
        group = shared_fixture_group(item)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))


def shared_fixture_group(item) -> str:
    """``path[param-ids]`` of ``item``'s module if it uses a module-scoped test fixture, else ""."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return ""
    shared = [name for name, defs in info.name2fixturedefs.items()
              if defs and defs[-1].scope == "module" and defs[-1].func.__module__.startswith("tests.")]
    if not shared:
        return ""
    params = getattr(getattr(item, "callspec", None), "params", {})
    ids = [f"{name}={params[name]}" for name in sorted(shared) if name in params]
    group = item.nodeid.split("::")[0] + (f"[{','.join(ids)}]" if ids else "")
    return group.replace("@", "_")
