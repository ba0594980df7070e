"""Bad configuration gets a one-line error naming the problem, and nothing starts."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.engine_kit import run_cli
from tests.kit import free_port

GOOD = {"idAccount": "7", "brokerName": "paper", "brokerClass": "paper.PaperAccountManager",
        "brokerConfig": {}, "accountConfig": {}, "epicMapping": {}}


@pytest.fixture
def config_server():
    """A real HTTP server that serves whatever document the test puts in ``docs``."""
    docs: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            account = self.path.split("/")[3] if self.path.count("/") >= 4 else ""
            if account not in docs:
                self.send_response(404)
                self.end_headers()
                return
            body = docs[account] if isinstance(docs[account], bytes) else json.dumps(docs[account]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", docs
    server.shutdown()
    server.server_close()


def start(url, tmp_path, account="7"):
    return run_cli("start", "--account", account, "--config-url", url, "--data-dir", str(tmp_path / "d"),
                   "--duration", "1")


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_config_service_that_does_not_answer(tmp_path):
    error = one_line_error(start(f"http://127.0.0.1:{free_port()}", tmp_path))
    assert "did not answer" in error and "account 7" in error


def test_unknown_account(config_server, tmp_path):
    url, _ = config_server
    assert "unknown account 7" in one_line_error(start(url, tmp_path))


@pytest.mark.parametrize("document, expected", [
    ({k: v for k, v in GOOD.items() if k != "brokerClass"}, "missing key 'brokerClass'"),
    ({**GOOD, "brokerConfg": {}}, "unknown key 'brokerConfg'"),
    ({**GOOD, "brokerConfig": "fast"}, "key 'brokerConfig'"),
    ({**GOOD, "epicMapping": {"EURUSD": 5}}, "key 'epicMapping.EURUSD'"),
    (b"{not json", "non-JSON"),
    ([1, 2], "must be a JSON object"),
])
def test_malformed_documents(config_server, tmp_path, document, expected):
    url, docs = config_server
    docs["7"] = document
    assert expected in one_line_error(start(url, tmp_path))


@pytest.mark.parametrize("broker_class, expected", [
    ("nosuch.Manager", "no module 'nosuch'"),
    ("paper.NoSuchClass", "has no 'NoSuchClass'"),
    ("json.JSONDecoder", "not a subclass of BaseAccountManager"),
])
def test_broker_class_that_cannot_be_used(config_server, tmp_path, broker_class, expected):
    url, docs = config_server
    docs["7"] = {**GOOD, "brokerClass": broker_class}
    assert expected in one_line_error(start(url, tmp_path))


def test_broker_settings_with_a_mistyped_key_stop_the_account_and_an_engine_left_with_none_exits_1(
        config_server, tmp_path):
    url, docs = config_server
    docs["7"] = {**GOOD, "brokerConfig": {"sead": 1}}
    result = run_cli("start", "--account", "7", "--config-url", url, "--data-dir", str(tmp_path / "d"),
                     "--duration", "30", "--no-demo")
    assert result.returncode == 1
    assert "unknown key 'sead'" in result.stdout + result.stderr
    assert "account 7 [paper]: disconnected" in result.stdout
    assert ("stopping with exit code 1: account 7 failed for good (account 7 brokerConfig: unknown key 'sead'"
            in result.stdout)
