"""Run the admin service: in the foreground (``maotrade admin serve``) or embedded."""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from pathlib import Path
from typing import Optional

import uvicorn

from engine.admin.api import create_app
from engine.admin.store import RegistryStore, open_store
from maotrade.secrets import SecretBox, load_or_create_key

log = logging.getLogger(__name__)

TOKEN_ENV = "MAOTRADE_ADMIN_TOKEN"


def load_or_create_token(data_dir: Path) -> str:
    """Return the admin token: ``MAOTRADE_ADMIN_TOKEN`` or ``admin.token`` (0600, made once)."""
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env
    path = Path(data_dir) / "admin.token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


def open_registry(data_dir: Path) -> RegistryStore:
    """Open the registry in ``data_dir`` with the master key (created 0600 if absent)."""
    box = SecretBox(load_or_create_key(Path(data_dir) / "master.key"))
    return open_store(data_dir, box)


class EmbeddedAdminServer:
    """The admin service on a free loopback port, in a background thread."""

    def __init__(self, store: RegistryStore, token: str, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port or _free_port(host)
        config = uvicorn.Config(create_app(store, token), host=host, port=self.port,
                                log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """Base URL of the service."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "EmbeddedAdminServer":
        """Start serving; return once the socket accepts requests."""
        self.thread = threading.Thread(target=self.server.run, name="admin-http", daemon=True)
        self.thread.start()
        ready = threading.Event()

        def wait_started():
            while not self.server.started and self.thread.is_alive():
                threading.Event().wait(0.01)
            ready.set()

        threading.Thread(target=wait_started, daemon=True).start()
        if not ready.wait(timeout) or not self.server.started:
            raise RuntimeError(f"embedded config service did not start on {self.url}")
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.should_exit = True
        if self.thread:
            self.thread.join(5)


def serve_forever(store: RegistryStore, token: str, host: str, port: int) -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.run(create_app(store, token), host=host, port=port, log_level="warning", access_log=False)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
