"""Guarantee 9: secrets encrypted at rest and redacted everywhere; tcp clients need Curve keys."""
from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from maotrade.client import EngineClient
from maotrade.errors import TemporaryError
from maotrade.messages import message
from tests.engine_kit import AdminService, EngineProcess, run_cli
from tests.kit import free_port, wait_until

pytestmark = pytest.mark.fault
PASSWORD = "Sup3r-S3cret-Pa55"


@pytest.fixture
def setup(tmp_path):
    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(),
           "MAOTRADE_ADMIN_TOKEN": "t-long-enough-for-a-test-0123456789",
           "MAOTRADE_CONFIG_TOKEN": "config-read-token-long-enough-0123456789",
           "MAOTRADE_ALLOW_BROKER_CLASS": "tests.brokers.*"}
    admin = AdminService(tmp_path / "admin", env)
    admin.cli("broker", "add", "leaky", "--class", "tests.brokers.leaky.LeakyAccountManager",
              "--config", '{"price_interval": 0.05}')
    admin.cli("account", "add", "901", "--broker", "leaky", "--config",
              json.dumps({"user": "bob", "password": PASSWORD}))
    yield admin, env
    admin.stop()


def test_a_leaking_broker_never_gets_the_password_into_logs_or_status(setup, tmp_path):
    admin, env = setup
    assert PASSWORD not in (tmp_path / "admin" / "registry.sqlite").read_bytes().decode("latin-1")
    data = tmp_path / "engine"
    engine = EngineProcess(data, ["901"], env=env, config_url=admin.url)
    try:
        # The broker crashes on portfolio requests, so the account stops at syncing: fine here.
        wait_until(lambda: engine.account_status("901")["state"] in ("syncing", "ready"), 30, what="account up")
        engine.send("portfolio_request", account="901")
        wait_until(lambda: "portfolio failed" in (data / "logs" / "maotrade.log").read_text(), 20,
                   what="the broker's crash report in the log")
        status = run_cli("status", "--json", "--data-dir", str(data))
        assert engine.interrupt() == 0
    finally:
        engine.kill()
    log_text = (data / "logs" / "maotrade.log").read_text()
    assert "password=***" in log_text and "bob:***" in log_text
    for text in (log_text, engine.output(), status.stdout, status.stderr):
        assert PASSWORD not in text


def test_tcp_clients_need_an_authorized_curve_key(setup, tmp_path):
    admin, env = setup
    admin.cli("account", "add", "902", "--broker", "leaky", "--config", json.dumps({"password": "xyz-pass"}))
    data = tmp_path / "engine"
    data.mkdir()
    added = run_cli("keys", "add", "desk1", "--data-dir", str(data), env=env)
    assert added.returncode == 0, added.stderr
    address = f"tcp://127.0.0.1:{free_port()}"
    engine = EngineProcess(data, ["902"], "--listen", address, env=env, config_url=admin.url)
    try:
        import zmq.auth
        server_public, _ = zmq.auth.load_certificate(str(data / "curve" / "server.key"))
        public, secret = zmq.auth.load_certificate(str(data / "curve" / "clients" / "desk1.key_secret"))
        stranger_public, stranger_secret = zmq.curve_keypair()
        for curve in (None, {"server_public": server_public, "public": stranger_public, "secret": stranger_secret}):
            outsider = EngineClient(address, name="outsider", curve=curve)
            with pytest.raises(TemporaryError):
                outsider.request(message("status_request"), "status", timeout=2)
            outsider.close(linger_ms=0)
        insider = EngineClient(address, name="desk1",
                               curve={"server_public": server_public, "public": public, "secret": secret})
        status = insider.request(message("status_request"), "status", timeout=10)["status"]
        assert [a["account"] for a in status["accounts"]] == ["902"]
        insider.close()
        assert engine.interrupt() == 0
    finally:
        engine.kill()
