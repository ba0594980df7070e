"""Fixtures: a QuickFIX acceptor on loopback, a relay in front of it, a FIX worker."""
from __future__ import annotations

import pytest

from tests.fix.proxy import TcpRelay
from tests.fix.quickfix_acceptor import QuickFixAcceptor
from tests.kit import WorkerHarness, free_port

SYMBOL = "ES-202412-FUT-CME"


def fix_document(port: int, account: str = "501", password: str | None = None, **broker) -> dict:
    """A FIX account document pointing at ``port`` with fast timers, for tests."""
    config = {"host": "127.0.0.1", "port": port, "sender_comp_id": "CLIENT", "target_comp_id": "BROKER",
              "heartbeat_interval": 1, "reconnect_base": 0.2, "reconnect_max": 0.5,
              "order_timeout": 3.0, "timeout": 5.0}
    config.update(broker)
    account_config = {"account": "ACC-1", "username": "trader"}
    if password:
        account_config["password"] = password
    return {"idAccount": account, "brokerName": "fixtest", "brokerClass": "fix.FIXAccountManager",
            "brokerConfig": config, "accountConfig": account_config,
            "epicMapping": {"ES_FUT": SYMBOL, "BAD_FUT": "BAD-SYMBOL"}}


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
