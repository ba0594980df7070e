"""Review finding L3: Curve keys are added and revoked while the engine runs, and a client
makes its own key pair (only the public key is handed over)."""
from __future__ import annotations

import json
import shutil

import pytest
import zmq.auth

from maotrade.client import EngineClient
from maotrade.errors import TemporaryError
from maotrade.messages import message
from tests.engine_kit import EngineProcess, run_cli
from tests.kit import free_port, wait_until


def _client(address, data, secret_file):
    server_public, _ = zmq.auth.load_certificate(str(data / "curve" / "server.key"))
    public, secret = zmq.auth.load_certificate(str(secret_file))
    return EngineClient(address, name=secret_file.stem,
                        curve={"server_public": server_public, "public": public, "secret": secret})


def _answers(address, data, secret_file) -> bool:
    client = _client(address, data, secret_file)
    try:
        client.request(message("status_request"), "status", timeout=1.5)
        return True
    except TemporaryError:
        return False
    finally:
        client.close(linger_ms=0)


def test_l3_keys_added_and_removed_while_running_and_made_by_the_client(tmp_path):
    data = tmp_path / "engine"
    data.mkdir()
    assert run_cli("keys", "add", "desk1", "--data-dir", str(data)).returncode == 0
    address = f"tcp://127.0.0.1:{free_port()}"
    engine = EngineProcess(data, ["123"], "--listen", address)
    try:
        desk1 = tmp_path / "desk1.key_secret"  # the copy the client holds
        shutil.copy(data / "curve" / "clients" / "desk1.key_secret", desk1)
        assert _answers(address, data, desk1)
        # The client makes its own pair; the engine host only ever sees the public half.
        made = run_cli("keys", "generate", "desk2", "--out", str(tmp_path / "desk2"))
        assert made.returncode == 0, made.stderr
        desk2 = tmp_path / "desk2" / "desk2.key_secret"
        assert not _answers(address, data, desk2)
        added = run_cli("keys", "add", "desk2", "--public-key", str(tmp_path / "desk2" / "desk2.key"),
                        "--data-dir", str(data))
        assert added.returncode == 0, added.stderr
        assert not any((data / "curve").rglob("desk2.key_secret"))
        wait_until(lambda: _answers(address, data, desk2), 15, what="desk2 accepted without a restart")
        listed = json.loads(run_cli("keys", "list", "--json", "--data-dir", str(data)).stdout)
        assert [k["name"] for k in listed] == ["desk1", "desk2"]
        assert run_cli("keys", "remove", "desk1", "--data-dir", str(data)).returncode == 0
        wait_until(lambda: not _answers(address, data, desk1), 15, what="desk1 refused without a restart")
        assert _answers(address, data, desk2)
        assert engine.interrupt() == 0
    finally:
        engine.kill()


def test_l3_a_secret_key_file_is_never_authorized(tmp_path):
    made = run_cli("keys", "generate", "x", "--out", str(tmp_path / "x"))
    assert made.returncode == 0
    refused = run_cli("keys", "add", "x", "--public-key", str(tmp_path / "x" / "x.key_secret"),
                      "--data-dir", str(tmp_path / "engine"))
    assert refused.returncode != 0 and "holds a secret key" in refused.stderr
