"""Review findings H4, M2, M4, M9: secrets are encrypted where they live and never leave
a worker, the journal, the API, the CLI or the bus in any form."""
from __future__ import annotations

import json
import sqlite3

import pytest
import requests
import zmq
from cryptography.fernet import Fernet

from engine.admin.store import RegistryStore
from engine.config_client import decrypted_config
from maotrade.config import parse_document
from maotrade.errors import ConfigError
from maotrade.messages import unpack_batch
from maotrade.secrets import SecretBox
from tests.engine_kit import AdminService, EngineProcess, run_cli
from tests.kit import free_port, wait_until
from tests.security.conftest import API_TOKEN

PASSWORD = 'S3cr"et\\pw-7781é'
API_KEY = "AK-55667788"
CRASH_PASSWORD = 'Crash-pw-4455"q'
FORMS = (PASSWORD, json.dumps(PASSWORD)[1:-1], json.dumps(PASSWORD, ensure_ascii=False)[1:-1],
         repr(PASSWORD)[1:-1], "S3cr%22et%5Cpw-7781%C3%A9", API_KEY, CRASH_PASSWORD)


@pytest.fixture
def leaky_stack(tmp_path, env):
    admin = AdminService(tmp_path / "admin", env)
    admin.cli("broker", "add", "refuser", "--class", "tests.brokers.leaky.LeakyAccountManager",
              "--config", '{"price_interval": 0.05, "leak_mode": "order_refuse"}')
    admin.cli("broker", "add", "crasher", "--class", "tests.brokers.leaky.LeakyAccountManager",
              "--config", '{"leak_mode": "init_crash", "reconnect_base": 0.2}')
    admin.cli("account", "add", "901", "--broker", "refuser", "--config",
              json.dumps({"user": "carol", "password": PASSWORD, "apiKey": API_KEY,
                                  "risk": {"max_order_qty": 10, "max_order_notional": 100000}}))
    admin.cli("account", "add", "902", "--broker", "crasher", "--config",
              json.dumps({"user": "dave", "password": CRASH_PASSWORD}))
    admin.cli("mapping", "set", "901", "EURUSD", "EURUSD")
    yield admin, env
    admin.stop()


def test_h4_m9_refusal_and_crash_reasons_never_carry_secrets(leaky_stack, tmp_path):
    admin, env = leaky_stack
    data = tmp_path / "engine"
    port = free_port()
    engine = EngineProcess(data, ["901", "902"], "--api-port", str(port), env=env, config_url=admin.url)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(engine.info["pub_address"])
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    published = []
    try:
        engine.wait_ready("901")
        api = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {API_TOKEN}"}

        def crashed_on_bus():
            while sub.poll(0):
                published.extend(unpack_batch(sub.recv()))
            return any(m.get("type") == "worker_error" or "crash" in json.dumps(m, default=str).lower()
                       for m in published)

        # The subscription is live once events flow; the crashing account restarts over and over.
        wait_until(crashed_on_bus, 30, interval=0.05, what="a worker crash published")
        order = {"account": "901", "epic": "EURUSD", "qty": 1, "order_type": "LIMIT", "price": 1.1}
        answer = requests.post(f"{api}/api/orders", json=order,
                               headers=headers, timeout=20)
        listed = wait_until(lambda: (lambda r: r if "REJECTED" in r.text else None)(
            requests.get(f"{api}/api/orders", params={"account": "901"}, headers=headers, timeout=10)), 20,
            what="the order rejected by the broker")
        wait_until(lambda: crashed_on_bus() and any(m.get("type") == "order" for m in published), 20,
                   interval=0.05, what="the refused order published")
        orders_cli = run_cli("orders", "--account", "901", "--data-dir", str(data), env=env)
        status_cli = run_cli("status", "--json", "--data-dir", str(data), env=env)
        assert engine.interrupt() == 0
    finally:
        sub.close(0)
        ctx.term()
        engine.kill()
    assert answer.status_code in (201, 422) and "expired" in listed.text
    journal = b"".join(p.read_bytes() for p in data.glob("journal.sqlite*"))
    texts = {"api answer": answer.text, "api list": listed.text, "orders cli": orders_cli.stdout + orders_cli.stderr,
             "status cli": status_cli.stdout, "pub": json.dumps(published, default=str),
             "journal": journal.decode("utf-8", "replace"), "log": (data / "logs" / "maotrade.log").read_text(),
             "console": engine.output()}
    for where, text in texts.items():
        for form in FORMS:
            assert form not in text, f"{form!r} leaked into the {where}"
    assert "***" in texts["api list"] and "***" in texts["pub"]


def _store(tmp_path, box):
    store = RegistryStore(tmp_path / "registry.sqlite", box, allow=("tests.brokers.*",))
    store.put_broker("free", "tests.brokers.leaky.FreeformAccountManager", {})
    store.put_broker("leaky", "tests.brokers.leaky.LeakyAccountManager", {})
    return store


def test_m2_nested_odd_and_declared_secrets_are_encrypted_at_rest_and_in_the_document(tmp_path):
    box = SecretBox(Fernet.generate_key())
    store = _store(tmp_path, box)
    config = {"user": "alice", "pin": "9876", "credentials": {"password": "NESTED-pw-5566",
                                                             "totp_seed": "JBSWY3DPEHPK3PXP"},
              "passcode": 12345678, "access_key": "AKIA-XYZ-1", "session": "sess-abc-1"}
    store.put_account("200", "free", config)
    store.put_account("201", "leaky", {"password": "pw-12345", "passphrase_word": "declared-by-type"})
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("registry.sqlite*")).decode("latin-1")
    for secret in ("9876", "NESTED-pw-5566", "JBSWY3DPEHPK3PXP", "12345678", "AKIA-XYZ-1", "sess-abc-1",
                   "declared-by-type"):
        assert secret not in raw
    document = store.document("200")
    served = json.dumps(document)
    assert "NESTED-pw-5566" not in served and "9876" not in served and "alice" in served
    assert decrypted_config(parse_document(document), box)["accountConfig"] == config
    assert "declared-by-type" not in json.dumps(store.document("201"))
    listing = json.dumps(store.list_accounts())
    assert "enc:" not in listing and "declared-by-type" not in listing


def test_m2_unknown_account_keys_are_refused_naming_the_key(tmp_path):
    store = _store(tmp_path, SecretBox(Fernet.generate_key()))
    with pytest.raises(ConfigError, match="unknown key 'pin'"):
        store.put_account("201", "leaky", {"password": "pw-12345", "pin": "1234"})


def test_m4_a_client_cannot_submit_encrypted_values(tmp_path):
    box = SecretBox(Fernet.generate_key())
    store = _store(tmp_path, box)
    stolen = box.encrypt("pw", "200", "accountConfig.password")
    with pytest.raises(ConfigError, match="encrypted values cannot be submitted"):
        store.put_account("201", "leaky", {"password": "pw-12345", "user": stolen})
    with pytest.raises(ConfigError, match="encrypted values cannot be submitted"):
        store.put_account("201", "free", {"note": {"deep": [stolen]}})


def test_m4_a_ciphertext_moved_to_another_field_or_account_does_not_decrypt(tmp_path):
    box = SecretBox(Fernet.generate_key())
    store = _store(tmp_path, box)
    store.put_account("200", "leaky", {"user": "alice", "password": "IGpass-Zebra-4491"})
    stolen = store.document("200")["accountConfig"]["password"]
    moved_field = parse_document({**store.document("200"), "accountConfig": {"user": stolen, "password": stolen}})
    with pytest.raises(ConfigError, match="accountConfig.user: cannot decrypt"):
        decrypted_config(moved_field, box)
    moved_account = parse_document({**store.document("200"), "idAccount": "201"})
    with pytest.raises(ConfigError, match="account 201 accountConfig.password: cannot decrypt"):
        decrypted_config(moved_account, box)
    with pytest.raises(ConfigError, match="cannot decrypt"):
        decrypted_config(parse_document(store.document("200")), SecretBox(Fernet.generate_key()))
    assert decrypted_config(parse_document(store.document("200")), box)["accountConfig"]["password"] == \
        "IGpass-Zebra-4491"


def test_m9_short_and_encoded_secrets_are_redacted():
    from maotrade.log import redact_text, register_secret

    register_secret("abc")
    register_secret('p"w\\é-9912')
    line = ("token=abc repr='p\"w\\\\é-9912' json=\"p\\\"w\\\\\\u00e9-9912\" url=p%22w%5C%C3%A9-9912 "
            "raw=p\"w\\é-9912")
    redacted = redact_text(line)
    assert "abc" not in redacted and "9912" not in redacted, redacted
