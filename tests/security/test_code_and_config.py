"""Review findings H2 and C1: only operator-approved broker code runs; the config document
is fetched authenticated, over TLS off loopback, and changes of where credentials go are logged."""
from __future__ import annotations

import json
import os
import sys

import pytest
import requests
from cryptography.fernet import Fernet

from engine.admin.store import RegistryStore
from engine.config_client import ConfigClient, check_fingerprint
from engine.loader import load_broker_class
from maotrade.errors import BrokerClassError, ConfigError
from maotrade.secrets import SecretBox
from tests.engine_kit import AdminService, run_cli
from tests.security.conftest import ADMIN_TOKEN, READ_TOKEN

EVIL = '''
import os, pathlib
pathlib.Path(os.environ["EVIL_MARKER"]).write_text(str(os.getpid()))
class Anything: pass
'''


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "evilmod.py").write_text(EVIL)
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("MAOTRADE_ALLOW_BROKER_CLASS", raising=False)
    yield folder, marker
    sys.modules.pop("evilmod", None)


def test_h2_a_broker_class_off_the_allowlist_is_never_imported(evil_module):
    _, marker = evil_module
    with pytest.raises(BrokerClassError, match="not allowed on this host"):
        load_broker_class("evilmod.Anything")
    assert not marker.exists()
    with pytest.raises(BrokerClassError, match="not allowed"):
        load_broker_class("uvicorn.__main__.main")
    assert load_broker_class("paper.PaperAccountManager").__name__ == "PaperAccountManager"


def test_h2_the_allowlist_extends_explicitly(evil_module):
    _, marker = evil_module
    with pytest.raises(BrokerClassError, match="not a subclass"):
        load_broker_class("evilmod.Anything", allow=("evilmod.*",))
    assert marker.exists()  # allowed by the operator: imported, then refused as no broker


def test_h2_the_admin_service_refuses_classes_off_its_allowlist(tmp_path, evil_module, env):
    folder, marker = evil_module
    env = {**env, "MAOTRADE_ALLOW_BROKER_CLASS": "", "PYTHONPATH": str(folder), "EVIL_MARKER": str(marker)}
    admin = AdminService(tmp_path / "admin", env)
    try:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        answer = requests.put(f"{admin.url}/api/brokers/evil", headers=auth, timeout=5,
                              json={"brokerClass": "evilmod.Anything", "brokerConfig": {}})
        assert answer.status_code == 422 and "not allowed" in answer.json()["detail"]
        missing = requests.put(f"{admin.url}/api/brokers/none", headers=auth, timeout=5,
                               json={"brokerClass": "paper.Nope", "brokerConfig": {}})
        assert missing.status_code == 422 and "has no 'Nope'" in missing.json()["detail"]
        cli = run_cli("admin", "broker", "add", "evil", "--class", "evilmod.Anything", "--data-dir",
                      str(tmp_path / "admin"), env=env)
        assert cli.returncode != 0 and "not allowed" in cli.stderr
    finally:
        admin.stop()
    assert not marker.exists()


def test_c1_the_config_service_needs_the_read_token_and_engines_send_it(tmp_path, env):
    admin = AdminService(tmp_path / "admin", env)
    try:
        admin.cli("broker", "add", "paper", "--class", "paper.PaperAccountManager")
        admin.cli("account", "add", "5", "--broker", "paper")
        assert requests.get(f"{admin.url}/api/accounts/5/config", timeout=5).status_code == 401
        assert requests.get(f"{admin.url}/api/brokers", timeout=5).status_code == 401
        with pytest.raises(ConfigError, match="refused the read token"):
            ConfigClient(admin.url).fetch("5")
        assert ConfigClient(admin.url, token=READ_TOKEN).fetch("5").brokerClass == "paper.PaperAccountManager"
        write = requests.put(f"{admin.url}/api/brokers/x", timeout=5, json={"brokerClass": "paper.PaperAccountManager"},
                             headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert write.status_code == 401  # the read token cannot write
    finally:
        admin.stop()


def test_c1_plain_http_is_refused_off_loopback():
    with pytest.raises(ConfigError, match="must use https"):
        ConfigClient("http://config.example.com:8700")
    ConfigClient("https://config.example.com:8700").close()
    ConfigClient("http://127.0.0.1:8700").close()


def test_c1_ig_endpoints_must_be_https():
    from account_managers.ig.config import IGBrokerSettings
    from maotrade.config import parse_settings

    with pytest.raises(ConfigError, match="endpoint_demo.*must use https"):
        parse_settings(IGBrokerSettings, {"endpoint_demo": "http://evil.example/gateway/deal"}, "brokerConfig")
    parse_settings(IGBrokerSettings, {"endpoint_demo": "http://127.0.0.1:18999/gateway/deal"}, "brokerConfig")


def test_c1_a_changed_endpoint_is_logged_with_the_fingerprint(tmp_path, caplog):
    document = {"idAccount": "200", "brokerClass": "ig.IGAccountManager",
                "brokerConfig": {"endpoint_demo": "https://demo-api.ig.com/gateway/deal", "timeout": 5}}
    assert check_fingerprint(document, tmp_path) is None
    assert check_fingerprint(document, tmp_path) is None
    moved = {**document, "brokerConfig": {**document["brokerConfig"], "endpoint_demo": "https://evil.example"}}
    with caplog.at_level("INFO"):
        assert check_fingerprint(moved, tmp_path) is not None
    changed = [r.getMessage() for r in caplog.records if "account_settings_changed" in r.getMessage()]
    assert changed and "evil.example" in changed[0]


def test_c1_admin_serve_refuses_a_public_bind_without_tls(tmp_path, env):
    result = run_cli("admin", "serve", "--host", "0.0.0.0", "--port", "1", "--data-dir", str(tmp_path), env=env)
    assert result.returncode != 0 and "without TLS" in result.stderr


def test_m3_admin_writes_are_audited_without_secrets(tmp_path, env):
    admin = AdminService(tmp_path / "admin", env)
    try:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert requests.put(f"{admin.url}/api/brokers/ig-demo", headers=auth, timeout=5, json={
            "brokerClass": "ig.IGAccountManager",
            "brokerConfig": {"endpoint_demo": "https://elsewhere.example/gateway/deal"}}).ok
        admin.cli("broker", "add", "paper", "--class", "paper.PaperAccountManager")
        admin.cli("account", "add", "7", "--broker", "ig-demo", "--config", json.dumps(
            {"user": "u", "password": "Secret-pw-1", "apiKey": "KEY-123", "accountId": "A1"}))
        rebound = requests.get(f"{admin.url}/api/accounts", timeout=5, headers={"Host": "evil.example:8700",
                                                                             **auth})
        assert rebound.status_code == 421  # DNS rebinding: not our host name
    finally:
        admin.stop()
    shown = run_cli("admin", "audit", "--data-dir", str(tmp_path / "admin"), env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert "put_account 7" in lines[0] and lines[0].split()[3].startswith("cli:")
    assert any("rest:127.0.0.1 (admin token)  put_broker ig-demo" in line and "elsewhere.example" in line
               for line in lines)
    assert "Secret-pw-1" not in shown.stdout and "KEY-123" not in shown.stdout


def test_store_refuses_secrets_too_short_to_redact(tmp_path):
    store = RegistryStore(tmp_path / "r.sqlite", SecretBox(Fernet.generate_key()))
    store.put_broker("paper", "paper.PaperAccountManager", {})
    store.put_broker("ig", "ig.IGAccountManager", {})
    with pytest.raises(ConfigError, match="shorter than 3"):
        store.put_account("1", "ig", {"user": "u", "password": "ab", "apiKey": "KEY-1", "accountId": "A"})


def test_m10_an_open_data_dir_is_made_private_and_files_are_0600(tmp_path, env):
    data = tmp_path / "open"
    data.mkdir()
    os.chmod(data, 0o755)
    result = run_cli("admin", "broker", "add", "paper", "--class", "paper.PaperAccountManager", "--data-dir",
                     str(data), env={k: v for k, v in env.items() if k != "MAOTRADE_MASTER_KEY"})
    assert result.returncode == 0, result.stderr
    assert data.stat().st_mode & 0o777 == 0o700
    for name in ("registry.sqlite", "master.key"):
        assert (data / name).stat().st_mode & 0o077 == 0, name


def test_l5_admin_cli_reports_an_exposed_master_key_in_one_line(tmp_path, env):
    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    (data / "master.key").write_bytes(Fernet.generate_key())
    os.chmod(data / "master.key", 0o644)
    result = run_cli("admin", "broker", "list", "--data-dir", str(data),
                     env={k: v for k, v in env.items() if k != "MAOTRADE_MASTER_KEY"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines()
                                                  if "readable by others" in line]
