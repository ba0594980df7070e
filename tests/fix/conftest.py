"""Fixtures: a QuickFIX acceptor on loopback, a relay in front of it, a FIX worker."""
from __future__ import annotations

import pytest

from tests.fix.proxy import TcpRelay
from tests.fix.quickfix_acceptor import QuickFixAcceptor
from tests.kit import WorkerHarness, fix_document, free_port

@pytest.fixture
def acceptor(tmp_path):
    """A running QuickFIX acceptor with its own FileStore."""
    with QuickFixAcceptor(free_port(), tmp_path / "acceptor") as running:
        yield running


@pytest.fixture
def relay(acceptor):
    """A TCP relay in front of the acceptor (to cut or silence the line)."""
    r = TcpRelay(acceptor.port)
    yield r
    r.close()


@pytest.fixture
def fix_worker(tmp_path, acceptor, relay):
    """A FIX Account Manager process logged on to the acceptor through the relay."""
    with WorkerHarness(fix_document(relay.port), tmp_path / "worker") as harness:
        harness.wait_type("init_result", timeout=20)
        harness.acceptor = acceptor
        harness.relay = relay
        yield harness
