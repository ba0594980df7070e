"""Run the admin service: in the foreground (``maotrade admin serve``) or embedded.

Every route but ``/api/health`` needs a token: the admin token for everything, or the
read token (what engines present) for reads. A bind to anything but loopback needs TLS
(``certfile``/``keyfile``) unless the operator says ``insecure``.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from pathlib import Path
from typing import Optional

import uvicorn

from engine.admin.api import create_app
from engine.admin.store import RegistryStore, open_store
from engine.http_guard import LIMIT_CONCURRENCY, allowed_hosts, guard
from engine.http_guard import load_or_create_token as _load_token
from maotrade.errors import ConfigError
from maotrade.secrets import SecretBox, load_or_create_key

log = logging.getLogger(__name__)

TOKEN_ENV = "MAOTRADE_ADMIN_TOKEN"
READ_TOKEN_ENV = "MAOTRADE_CONFIG_TOKEN"
READ_TOKEN_FILE = "config.token"


def load_or_create_token(data_dir: Path) -> str:
    """Return the admin token: ``MAOTRADE_ADMIN_TOKEN`` or ``admin.token`` (0600, made once)."""
    return _load_token(Path(data_dir) / "admin.token", TOKEN_ENV)


def load_or_create_read_token(data_dir: Path) -> str:
    """Return the read token engines present: ``MAOTRADE_CONFIG_TOKEN`` or ``config.token`` (0600)."""
    return _load_token(Path(data_dir) / READ_TOKEN_FILE, READ_TOKEN_ENV)


def open_registry(data_dir: Path) -> RegistryStore:
    """Open the registry in ``data_dir`` with the master key (created 0600 if absent)."""
    box = SecretBox(load_or_create_key(Path(data_dir) / "master.key"))
    return open_store(data_dir, box)


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_app(store: RegistryStore, token: str, read_token: Optional[str], host: str,
              server_names: tuple[str, ...] = ()):
    """The admin app behind its guards (host check, tokens, body cap)."""
    return guard(create_app(store, token), token, open_paths=("/api/health",),
                 read_tokens=[read_token] if read_token else [], hosts=allowed_hosts(host, server_names),
                 realm="admin")


class EmbeddedAdminServer:
    """The admin service on a free loopback port, in a background thread."""

    def __init__(self, store: RegistryStore, token: str, host: str = "127.0.0.1", port: int = 0,
                 read_token: Optional[str] = None):
        self.host = host
        self.port = port or _free_port(host)
        config = uvicorn.Config(build_app(store, token, read_token, host), host=host, port=self.port,
                                log_level="warning", access_log=False, lifespan="off",
                                limit_concurrency=LIMIT_CONCURRENCY, proxy_headers=False)
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


def serve_forever(store: RegistryStore, token: str, host: str, port: int, read_token: Optional[str] = None,
                  certfile: Optional[str] = None, keyfile: Optional[str] = None, insecure: bool = False,
                  server_names: tuple[str, ...] = ()) -> None:
    """Serve in the foreground until interrupted; refuse a non-loopback bind without TLS."""
    check_bind(host, certfile, keyfile, insecure)
    uvicorn.run(build_app(store, token, read_token, host, server_names), host=host, port=port,
                log_level="warning", access_log=False, limit_concurrency=LIMIT_CONCURRENCY, proxy_headers=False,
                ssl_certfile=certfile, ssl_keyfile=keyfile)


def check_bind(host: str, certfile: Optional[str], keyfile: Optional[str], insecure: bool) -> None:
    """Raise ``ConfigError`` for a bind the operator did not mean: off loopback without TLS."""
    if bool(certfile) != bool(keyfile):
        raise ConfigError("give both --ssl-certfile and --ssl-keyfile, or neither")
    for path in (certfile, keyfile):
        if path and not Path(path).is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    if not certfile and not is_loopback(host):
        if not insecure:
            raise ConfigError(f"refusing to serve the registry on {host} without TLS: give --ssl-certfile and "
                              "--ssl-keyfile, or --insecure if a TLS proxy or private network protects it")
        log.warning("event=admin_insecure host=%s reason=plain HTTP off loopback", host)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
