"""Serve the engine's REST API on a background thread of the engine process."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional

import uvicorn

from engine.api.app import create_app
from engine.api.bridge import EngineBridge
from engine.api.dashboard import mount_dashboard
from engine.api.reports import ReportIndex
from engine.api.sessions import LoginManager
from engine.api.webhook import DEFAULT_WINDOW_S, AccountWebhook, AlertStore, WebhookService
from engine.http_guard import LIMIT_CONCURRENCY, guard, load_or_create_token
from engine.observer import EventFeed
from engine.paths import reports_dir as engine_reports_dir
from maotrade.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "MAOTRADE_API_TOKEN"
TOKEN_FILE = "api.token"
# Served without the token: liveness, the webhook (it is signed instead) and the docs.
OPEN_PATHS = ("/api/health", "/api/webhook/tradingview", "/docs", "/openapi.json")


def load_or_create_api_token(data_dir: Path) -> str:
    """Return the API token: ``MAOTRADE_API_TOKEN`` or ``api.token`` (0600, made once, 32+ bytes)."""
    return load_or_create_token(Path(data_dir) / TOKEN_FILE, TOKEN_ENV)


def webhook_accounts(documents: list[dict]) -> dict[str, AccountWebhook]:
    """Webhook credentials of every account document that has a ``webhook_secret``."""
    out = {}
    for document in documents:
        config = document.get("accountConfig") or {}
        secret = config.get("webhook_secret")
        if not secret:
            continue
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"account {document['idAccount']} accountConfig.webhook_secret must be a string "
                              "of at least 16 characters")
        allowed = config.get("webhook_allowed_ips") or []
        try:
            out[str(document["idAccount"])] = AccountWebhook(secret, allowed)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"account {document['idAccount']} accountConfig.webhook_allowed_ips: {exc}") from None
    return out


class ApiServer:
    """The engine API (and webhook) on ``host:port``, served by uvicorn on a thread."""

    def __init__(self, engine_address: str, data_dir: Path, documents: list[dict], host: str = "127.0.0.1",
                 port: int = 8710, webhook_window_s: float = DEFAULT_WINDOW_S, pub_address: Optional[str] = None,
                 trusted_proxies: Optional[list[str]] = None, reports_dir: Optional[Path] = None):
        """``pub_address``: the engine's PUB socket, for the dashboard's live events;
        ``trusted_proxies``: addresses whose ``X-Forwarded-For`` names the client (default none:
        the webhook's IP allowlist then sees the real peer address); ``reports_dir``: where the
        dashboard finds backtest and optimisation reports (default ``<data dir>/reports``)."""
        self.host, self.port = host, port
        self.bridge = EngineBridge(engine_address, name="api")
        self.webhook = WebhookService(EngineBridge(engine_address, name="webhook"),
                                      AlertStore(Path(data_dir) / "webhook.sqlite"),
                                      webhook_accounts(documents), window_s=webhook_window_s)
        token = load_or_create_api_token(Path(data_dir))
        api = create_app(self.bridge, token, self.webhook)
        # The dashboard (/ui/): its own bus connection, and the engine's events when we know its PUB.
        self.logins = LoginManager(token)
        self.feed = EventFeed(pub_address, name="dashboard-feed") if pub_address else None
        self.ui_bridge = EngineBridge(engine_address, name="dashboard")
        self.reports = ReportIndex(reports_dir or engine_reports_dir(Path(data_dir)))
        self.ui_streams = mount_dashboard(api, self.ui_bridge, self.logins, self.feed, self.reports)
        # The dashboard checks its own session cookie and CSRF token; the body cap holds for it too.
        app = guard(api, token, realm="API", open_paths=OPEN_PATHS, open_prefixes=("/docs-static/", "/ui"))
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off", limit_concurrency=LIMIT_CONCURRENCY,
                                proxy_headers=bool(trusted_proxies),
                                forwarded_allow_ips=",".join(trusted_proxies) if trusted_proxies else "")
        self.server = uvicorn.Server(config)
        self.thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://{self.host}:{self.port}"

    def login_url(self) -> str:
        """A dashboard URL that logs one browser in, once."""
        return f"{self.url}/ui/#token={self.logins.new_login_token()}"

    def start(self, timeout: float = 10.0) -> "ApiServer":
        """Serve; return once the socket accepts connections. Pending alerts are resumed."""
        if self.feed is not None:
            self.feed.start()
        self.thread = threading.Thread(target=self.server.run, name="engine-api", daemon=True)
        self.thread.start()
        started = threading.Event()

        def watch():
            while not self.server.started and self.thread.is_alive():
                started.wait(0.01)
            started.set()

        threading.Thread(target=watch, daemon=True).start()
        if not started.wait(timeout) or not self.server.started:
            raise ConfigError(f"engine API could not listen on {self.url} (port in use?)")
        resumed = self.webhook.resume()
        if resumed:
            log.warning("event=webhook_alerts_resumed count=%d", resumed)
        return self

    def stop(self) -> None:
        """Stop serving, finish queued alerts, close bus connections."""
        self.ui_streams.close()
        self.server.should_exit = True
        if self.thread:
            self.thread.join(5)
        self.webhook.close()
        self.webhook.bridge.close()
        self.bridge.close()
        self.ui_bridge.close()
        if self.feed is not None:
            self.feed.stop()
