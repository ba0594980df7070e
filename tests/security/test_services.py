"""Review findings M1, L4, H3, L5, M6, L1, L2, M5 against a real engine serving its REST
API and webhook: tokens, body caps, errors, proxies, alert checks, fail-closed limits."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
import requests

from engine.api.webhook import sign_alert
from tests.engine_kit import AdminService, EngineProcess, run_cli
from tests.kit import free_port
from tests.security.conftest import API_TOKEN

SECRET = "webhook-secret-for-sec-tests-1"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


class Stack:
    def __init__(self, tmp, env):
        self.admin = AdminService(tmp / "admin", env)
        self.admin.cli("broker", "add", "paper", "--class", "paper.PaperAccountManager",
                       "--config", '{"price_interval": 0.05}')
        self.admin.cli("account", "add", "123", "--broker", "paper", "--config", json.dumps(
            {"webhook_secret": SECRET, "webhook_allowed_ips": ["192.0.2.10/32"]}))
        self.admin.cli("account", "add", "124", "--broker", "paper", "--config", json.dumps(
            {"webhook_secret": SECRET}))
        for account in ("123", "124"):
            self.admin.cli("mapping", "set", account, "EURUSD", "EURUSD")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.engine = EngineProcess(tmp / "engine", ["123", "124"], "--api-port", str(self.port), env=env,
                                    config_url=self.admin.url)
        self.engine.wait_ready("124")

    def stop(self):
        self.engine.kill()
        self.admin.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from cryptography.fernet import Fernet

    from tests.security.conftest import ADMIN_TOKEN, READ_TOKEN
    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(), "MAOTRADE_ADMIN_TOKEN": ADMIN_TOKEN,
           "MAOTRADE_CONFIG_TOKEN": READ_TOKEN, "MAOTRADE_API_TOKEN": API_TOKEN}
    stack = Stack(tmp_path_factory.mktemp("svc"), env)
    yield stack
    stack.stop()


def alert(alert_id, account="124", **fields):
    body = {"account": account, "ticker": "FX:EURUSD", "action": "buy", "order_type": "market", "quantity": 1,
            "strategy": "t", "alert_id": alert_id, "timestamp": int(time.time())}
    body.update(fields)
    body["signature"] = sign_alert(body, SECRET)
    return body


def hook(stack, body=None, **kwargs):
    return requests.post(stack.url + "/api/webhook/tradingview", timeout=5, **kwargs,
                         **({"json": body} if body is not None else {}))


def test_m1_l4_empty_short_or_exposed_tokens_refuse_to_start(tmp_path, env):
    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    for content, mode, expected in (("", 0o600, "empty"), ("weak", 0o600, "too short"),
                                    ("x" * 40, 0o644, "readable by others")):
        token_file = data / "admin.token"
        token_file.write_text(content)
        os.chmod(token_file, mode)
        result = run_cli("admin", "serve", "--port", str(free_port()), "--data-dir", str(data),
                         env={k: v for k, v in env.items() if k != "MAOTRADE_ADMIN_TOKEN"}, timeout=30)
        assert result.returncode != 0 and expected in result.stderr, (content, result.stderr)
    short_env = run_cli("admin", "serve", "--port", str(free_port()), "--data-dir", str(data),
                        env={**env, "MAOTRADE_ADMIN_TOKEN": "t"}, timeout=30)
    assert short_env.returncode != 0 and "MAOTRADE_ADMIN_TOKEN is too short" in short_env.stderr


def test_m1_an_empty_bearer_never_authenticates(stack):
    for header in ("Bearer ", "bearer", "Bearer", ""):
        assert requests.post(stack.url + "/api/kill-switch", json={"mode": "halted"}, timeout=5,
                             headers={"Authorization": header}).status_code == 401


def test_h3_bodies_are_capped_and_checked_after_auth(stack):
    # Unauthenticated: refused before a byte of the body is read (the server closes at once).
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
        sock.sendall(b"POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 268435456\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 401")
    big = b'{"account": "124", "epic": "' + b"E" * 100_000 + b'"}'
    assert requests.post(stack.url + "/api/orders", data=big, headers={**AUTH, "Content-Type": "application/json"},
                         timeout=5).status_code == 413
    assert hook(stack, data=b"[" * 70_000).status_code == 413

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(100):
            yield b" " * 4096

    assert requests.post(stack.url + "/api/webhook/tradingview", data=chunks(), timeout=5).status_code == 413


def test_l5_nan_infinity_and_deep_json_get_4xx(stack):
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = '{"account": "124", "epic": "EURUSD", "qty": %s}' % literal
        answer = requests.post(stack.url + "/api/orders", data=body, timeout=5,
                               headers={**AUTH, "Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, (literal, answer.status_code)
    assert hook(stack, data=b"[" * 30_000 + b"]" * 30_000).status_code == 400
    nan_hook = json.dumps(alert("a-nan-literal")).replace('"quantity": 1', '"quantity": NaN')
    assert hook(stack, data=nan_hook).status_code == 400


def test_l5_webhook_answers_do_not_reveal_accounts(stack):
    unknown = hook(stack, alert("a-x", account="999"))
    enabled = hook(stack, dict(alert("a-y"), signature="0" * 64))
    assert unknown.status_code == enabled.status_code == 401
    assert unknown.json() == enabled.json()


def test_l5_docs_offline_and_bearer_in_openapi(stack):
    page = requests.get(stack.url + "/docs", timeout=5)
    assert page.ok and "cdn" not in page.text.lower()
    assert requests.get(stack.url + "/docs-static/swagger-ui-bundle.js", timeout=5).ok
    schema = requests.get(stack.url + "/openapi.json", timeout=5).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_m6_forwarded_headers_are_not_trusted_by_default(stack):
    for header in ("192.0.2.10", "192.0.2.10, 127.0.0.1", "203.0.113.9, 192.0.2.10"):
        answer = hook(stack, alert(f"a-xff-{header}", account="123"), headers={"X-Forwarded-For": header})
        assert answer.status_code == 403, (header, answer.text)


def test_l1_non_finite_timestamps_are_refused(stack):
    for stamp in ("nan", "NaN", "inf"):
        assert hook(stack, alert(f"a-ts-{stamp}", timestamp=stamp)).status_code in (401, 422)


def test_l2_control_characters_cannot_shift_fields_between_signed_values(stack):
    original = alert("tv-1\nrun2", ticker="FX:EURUSD")
    forged = dict(original, alert_id="tv-1", ticker="run2\nFX:EURUSD")
    assert hook(stack, original).status_code == 422
    assert hook(stack, forged).status_code == 422


def test_m5_api_and_webhook_orders_need_explicit_limits_and_strict_numbers(stack):
    for qty in (True, "10", 1e308, 5e-324, -1e300):
        answer = requests.post(stack.url + "/api/orders", json={"account": "124", "epic": "EURUSD", "qty": qty},
                               headers=AUTH, timeout=5)
        assert answer.status_code == 422, (qty, answer.text)
    unlimited = requests.post(stack.url + "/api/orders", json={"account": "124", "epic": "EURUSD", "qty": 1},
                              headers=AUTH, timeout=20)
    assert unlimited.status_code == 422 and unlimited.json()["code"] == "limits_required"
    assert "max_order_qty and max_order_notional" in unlimited.json()["order"]["reason"]
    assert hook(stack, alert("a-huge", quantity=1e308)).status_code == 422
    assert hook(stack, alert("a-bool", quantity=True)).status_code == 422
