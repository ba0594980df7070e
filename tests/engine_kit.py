"""Run the real ``maotrade`` command in subprocesses and talk to it over its bus."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import psutil
import requests

from maotrade.client import EngineClient
from maotrade.messages import message
from tests.kit import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
_REQUEST_IDS = itertools.count(1)


def maotrade_cmd(*args: str) -> list[str]:
    """The command line of ``maotrade ARGS`` with this interpreter."""
    return [sys.executable, "-m", "engine.cli", *args]


def run_cli(*args: str, env: Optional[dict] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``maotrade ARGS`` to completion."""
    return subprocess.run(maotrade_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def _read_json(path: Path) -> Optional[dict]:
    """The JSON document at ``path``, or None while it is absent or still being written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class AdminService:
    """``maotrade admin serve`` in its own process on a free loopback port."""

    def __init__(self, data_dir: Path, env: dict):
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(maotrade_cmd("admin", "serve", "--port", str(self.port),
                                                     "--data-dir", str(data_dir)),
                                        cwd=ROOT, env={**os.environ, **env},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._healthy, 30, what="admin service health")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"admin service exited: {self.process.stderr.read().decode()}")
        try:
            return requests.get(f"{self.url}/api/health", timeout=1).ok
        except requests.RequestException:
            return False

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run an admin CLI command against this service's registry."""
        result = run_cli("admin", *args, "--data-dir", str(self.data_dir), env=self.env)
        assert result.returncode == 0, result.stderr
        return result

    def stop(self) -> None:
        """Stop the service."""
        self.process.terminate()
        self.process.wait(10)


class EngineProcess:
    """``maotrade start`` in its own process, and a bus client connected to it."""

    def __init__(self, data_dir: Path, accounts: list[str], *extra: str, env: Optional[dict] = None,
                 config_url: Optional[str] = None):
        self.data_dir = Path(data_dir)
        args = ["start", "--data-dir", str(data_dir), "--no-bars"]
        for account in accounts:
            args += ["--account", account]
        if config_url:
            args += ["--config-url", config_url]
        self.log = open(self.data_dir.parent / f"{self.data_dir.name}-stdout.txt", "w+")
        self.process = subprocess.Popen(maotrade_cmd(*args, *extra), cwd=ROOT, env={**os.environ, **(env or {})},
                                        stdout=self.log, stderr=subprocess.STDOUT)
        info_path = self.data_dir / "engine.json"
        self.info = wait_until(lambda: self._check_alive() and _read_json(info_path), 60, what="engine.json")
        # Every message the engine sends a test must fit the protocol's to_client structs.
        self.client = EngineClient(self.info["client_address"], name="tester", check_types=True)
        self.welcome = self.client.hello(timeout=30)
        self.received: list[dict] = []

    def _check_alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"engine exited with {self.process.returncode}: {self.output()}")
        return True

    def output(self) -> str:
        """What the engine printed so far."""
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()

    def status(self) -> dict:
        """The engine's status document."""
        return self.client.request(message("status_request"), "status", timeout=10)["status"]

    def account_status(self, account: str) -> dict:
        """One account's entry of the status document."""
        return next(a for a in self.status()["accounts"] if a["account"] == account)

    def wait_ready(self, account: str, timeout: float = 60) -> dict:
        """Wait until ``account`` is ready; return its status."""
        return wait_until(lambda: (lambda s: s if s["state"] == "ready" else None)(self.account_status(account)),
                          timeout, interval=0.1, what=f"account {account} ready")

    def collect(self) -> list[dict]:
        """Receive what the engine sent this client."""
        new = self.client.receive(50)
        assert not self.client.refused, f"the engine sent what the protocol does not describe: {self.client.refused}"
        self._check_alive()
        self.received.extend(new)
        return new

    def mark(self) -> int:
        """Index to pass as ``since`` to wait only for messages received from now on."""
        self.collect()
        return len(self.received)

    def wait_order(self, client_order_id: str, statuses, timeout: float = 30, since: int = 0) -> dict:
        """Wait for an ``order`` message about ``client_order_id`` in one of ``statuses``."""
        statuses = {statuses} if isinstance(statuses, str) else set(statuses)
        deadline = time.monotonic() + timeout
        seen = since
        while time.monotonic() < deadline:
            for msg in self.received[seen:]:
                if msg.get("type") == "order" and msg.get("client_order_id") == client_order_id \
                        and msg.get("status") in statuses:
                    return msg
            seen = len(self.received)
            self.collect()
        raise AssertionError(f"order {client_order_id} never reached {statuses}; got "
                             f"{[(m.get('client_order_id'), m.get('status')) for m in self.received if m.get('type') == 'order']}")

    def send(self, msg_type: str, **fields) -> None:
        """Send one client message."""
        self.client.send(message(msg_type, **fields))

    def orders(self, timeout: float = 10, **filters) -> list[dict]:
        """The engine's journaled orders (``orders_request`` with ``filters``)."""
        request_id = f"q{next(_REQUEST_IDS)}"
        answer = self.client.request(message("orders_request", request_id=request_id, **filters), "orders",
                                     timeout=timeout, match=lambda m: m.get("request_id") == request_id)
        return answer["orders"]

    def journaled(self, account: str, client_order_id: str) -> Optional[dict]:
        """One journaled order, with all its fills (None if the engine has no such order)."""
        found = self.orders(account=account, client_order_id=client_order_id)
        return found[0] if found else None

    def wait_message(self, predicate, timeout: float = 30, since: int = 0, what: str = "message") -> dict:
        """Wait for a received message (from index ``since``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for msg in self.received[seen:]:
                if predicate(msg):
                    return msg
            seen = len(self.received)
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: "
                                     f"{[m.get('type') for m in self.received[-15:]]}")
            self.collect()

    def children(self) -> list[psutil.Process]:
        """Every process the engine started, recursively."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C the engine; return its exit code."""
        children = self.children()
        self.client.close()
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"orphan processes left: {[p.pid for p in alive]}"
        return code

    def kill(self) -> None:
        """Stop the engine whatever its state (test teardown)."""
        self.client.close(linger_ms=0)
        if self.process.poll() is None:
            for child in self.children():
                child.kill()
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def engine_on_account(document: dict, workdir: Path, *extra: str) -> tuple[AdminService, EngineProcess]:
    """An admin service holding ``document`` as its only account, and ``maotrade start`` on it."""
    from cryptography.fernet import Fernet

    workdir = Path(workdir)
    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(),
           "MAOTRADE_ADMIN_TOKEN": "contract-admin-token-long-enough-0123456789",
           "MAOTRADE_CONFIG_TOKEN": "contract-config-token-long-enough-0123456789"}
    admin = AdminService(workdir / "admin", env)
    try:
        account, broker = str(document["idAccount"]), f"{document['brokerName']}{document['idAccount']}"
        admin.cli("broker", "add", broker, "--class", document["brokerClass"],
                  "--config", json.dumps(document["brokerConfig"]))
        admin.cli("account", "add", account, "--broker", broker, "--config", json.dumps(document["accountConfig"]))
        for epic, epic_broker in document["epicMapping"].items():
            admin.cli("mapping", "set", account, epic, epic_broker)
        engine = EngineProcess(workdir / "engine", [account], *extra, env=env, config_url=admin.url)
    except BaseException:
        admin.stop()
        raise
    return admin, engine
