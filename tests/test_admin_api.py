"""The admin/config REST service over real HTTP: token on writes, secrets encrypted."""
from __future__ import annotations

import requests
from cryptography.fernet import Fernet

from maotrade.secrets import SecretBox
from tests.engine_kit import AdminService, run_cli


def test_registry_over_http_with_token_and_encrypted_secrets(tmp_path):
    key = Fernet.generate_key().decode()
    env = {"MAOTRADE_MASTER_KEY": key, "MAOTRADE_ADMIN_TOKEN": "s3cret-token-long-enough-for-a-test-0123456789",
           "MAOTRADE_CONFIG_TOKEN": "config-read-token-long-enough-0123456789",
           "MAOTRADE_ALLOW_BROKER_CLASS": "tests.brokers.*"}
    service = AdminService(tmp_path / "admin", env)
    try:
        url = service.url
        auth = {"Authorization": "Bearer s3cret-token-long-enough-for-a-test-0123456789"}
        read = {"Authorization": "Bearer config-read-token-long-enough-0123456789"}
        body = {"brokerClass": "tests.brokers.leaky.LeakyAccountManager", "brokerConfig": {"seed": 1}}
        assert requests.put(f"{url}/api/brokers/paper", json=body, timeout=5).status_code == 401
        assert requests.put(f"{url}/api/brokers/paper", json=body, timeout=5,
                            headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert requests.put(f"{url}/api/brokers/paper", json=body, headers=auth, timeout=5).ok
        account = {"brokerName": "paper", "accountConfig": {"user": "bob", "password": "hunter22",
                                                            "apiKey": "K-123456"}}
        assert requests.put(f"{url}/api/accounts/42", json=account, headers=auth, timeout=5).ok
        assert requests.put(f"{url}/api/accounts/42/mappings/EURUSD", json={"epicBroker": "CS.D.EURUSD"},
                            headers=auth, timeout=5).ok
        assert requests.get(f"{url}/api/accounts", timeout=5).status_code == 401
        listed = requests.get(f"{url}/api/accounts", headers=read, timeout=5).json()
        assert listed == [{"idAccount": "42", "brokerName": "paper",
                           "accountConfig": {"user": "bob", "password": "***", "apiKey": "***"}}]
        document = requests.get(f"{url}/api/accounts/42/config", headers=read, timeout=5).json()
        assert document["epicMapping"] == {"EURUSD": "CS.D.EURUSD"}
        assert document["accountConfig"]["password"].startswith("enc:v2:")
        assert "hunter22" not in (tmp_path / "admin" / "registry.sqlite").read_bytes().decode("latin-1")
        assert SecretBox(key.encode()).decrypt(document["accountConfig"]["password"], "42",
                                               "accountConfig.password") == "hunter22"
        assert requests.get(f"{url}/api/accounts/9/config", headers=read, timeout=5).status_code == 404
        assert requests.delete(f"{url}/api/brokers/paper", headers=auth, timeout=5).status_code == 409
        bad = requests.put(f"{url}/api/accounts/43", json={"brokerName": "nope"}, headers=auth, timeout=5)
        assert bad.status_code == 404 and "unknown broker" in bad.json()["detail"]
        assert "/api/accounts/{account_id}/config" in requests.get(f"{url}/openapi.json", headers=read,
                                                                   timeout=5).json()["paths"]
        listed_cli = service.cli("account", "list").stdout
        assert "hunter22" not in listed_cli and "***" in listed_cli
    finally:
        service.stop()


def test_cli_refuses_unknown_broker_class_in_one_line(tmp_path):
    result = run_cli("admin", "broker", "add", "x", "--class", "nosuch.Thing", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: brokerClass 'nosuch.Thing'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_master_key_file_is_created_private(tmp_path):
    result = run_cli("admin", "broker", "list", "--data-dir", str(tmp_path), env={"MAOTRADE_MASTER_KEY": ""})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
