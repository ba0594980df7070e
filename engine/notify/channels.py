"""Deliver one notification: Telegram's Bot API (``sendMessage``) or a signed JSON webhook.

Errors are named by what the notifier must do: ``RetryLater`` (the endpoint asked us to
wait, or was unreachable: try again once), ``DeliveryFailed`` (it refused: log and move
on). Neither ever carries a URL with a bot token or any secret in its text.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests

from engine.notify.config import TelegramSettings, WebhookSettings
from engine.notify.events import Notification

SIGNATURE_HEADER = "X-MAOTrade-Signature"
TELEGRAM_MAX_TEXT = 4096  # the Bot API's limit on a message's text


class DeliveryFailed(Exception):
    """The endpoint refused the notification; retrying the same one will not help."""


class RetryLater(DeliveryFailed):
    """The endpoint is busy or unreachable; retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float):
        super().__init__(reason)
        self.retry_after = retry_after


def sign(body: bytes, secret: str) -> str:
    """The signature header value of a webhook body: ``sha256=`` + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class TelegramChannel:
    """Send notifications as messages to one Telegram chat."""

    def __init__(self, name: str, settings: TelegramSettings, session: requests.Session):
        self.name = name
        self.settings = settings
        self.session = session

    def send(self, note: Notification) -> None:
        """Post ``sendMessage``; raise ``RetryLater`` or ``DeliveryFailed``."""
        url = f"{self.settings.base_url.rstrip('/')}/bot{self.settings.bot_token.get_secret_value()}/sendMessage"
        body = {"chat_id": self.settings.chat_id, "text": note.text[:TELEGRAM_MAX_TEXT],
                "disable_web_page_preview": True}
        try:
            response = self.session.post(url, json=body, timeout=self.settings.timeout_s)
        except requests.RequestException as exc:  # its text holds the URL, hence the token: not shown
            raise RetryLater(f"Telegram unreachable ({type(exc).__name__})", 5.0) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.ok and answer.get("ok"):
            return
        description = str(answer.get("description") or f"HTTP {response.status_code}")
        if response.status_code == 429 or answer.get("error_code") == 429:
            retry = float((answer.get("parameters") or {}).get("retry_after") or 1)
            raise RetryLater(f"Telegram: {description}", retry)
        if response.status_code >= 500:
            raise RetryLater(f"Telegram: {description}", 5.0)
        raise DeliveryFailed(f"Telegram: {description}")


class WebhookChannel:
    """POST notifications as JSON, signed in ``X-MAOTrade-Signature``."""

    def __init__(self, name: str, settings: WebhookSettings, session: requests.Session):
        self.name = name
        self.settings = settings
        self.session = session

    def send(self, note: Notification) -> None:
        """POST the notification; raise ``RetryLater`` or ``DeliveryFailed``."""
        body = json.dumps({"kind": note.kind, "account": note.account, "text": note.text, "data": note.data,
                           "timestamp": round(time.time(), 3)}, sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign(body, self.settings.secret.get_secret_value())}
        try:
            response = self.session.post(self.settings.url, data=body, headers=headers,
                                         timeout=self.settings.timeout_s)
        except requests.RequestException as exc:
            raise RetryLater(f"webhook unreachable ({type(exc).__name__})", 5.0) from None
        if response.status_code == 429 or response.status_code >= 500:
            retry = response.headers.get("Retry-After", "")
            raise RetryLater(f"webhook answered HTTP {response.status_code}",
                             float(retry) if retry.isdigit() else 5.0)
        if not response.ok:
            raise DeliveryFailed(f"webhook answered HTTP {response.status_code}")


def make_channel(name: str, settings, session: requests.Session):
    """The channel for one ``channels`` entry of the settings."""
    kind = TelegramChannel if isinstance(settings, TelegramSettings) else WebhookChannel
    return kind(name, settings, session)
