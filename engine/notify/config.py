"""Notification settings: channels, routes (which accounts and event kinds go where), rate limits.

The file (``--notify-config``, default ``notify.json`` in the data directory) is JSON::

    {"channels": {
        "desk": {"type": "telegram", "bot_token": "env:MAOTRADE_TELEGRAM_TOKEN", "chat_id": "-100123"},
        "ops":  {"type": "webhook", "url": "https://ops.example/hook", "secret": "env:OPS_HOOK_SECRET"}},
     "routes": [{"channel": "desk", "accounts": ["123"], "events": ["fill", "rejected", "kill_switch"]},
                {"channel": "ops", "accounts": ["*"], "events": ["*"]}],
     "rate_limit": {"per_minute": 20, "burst": 5}}

A secret given as ``env:NAME`` is read from the environment variable NAME (the file then
holds no secret). Unknown keys are refused, naming the key.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from maotrade.errors import ConfigError


class EventKind:
    """What a notification is about (``events`` of a route; ``*`` is every kind)."""

    FILL = "fill"
    REJECTED = "rejected"
    RISK_DENIAL = "risk_denial"
    DISCONNECTED = "disconnected"
    RECONNECTED = "reconnected"
    STALE_DATA = "stale_data"
    KILL_SWITCH = "kill_switch"
    OPERATOR_ACTION = "operator_action"
    ALL = (FILL, REJECTED, RISK_DENIAL, DISCONNECTED, RECONNECTED, STALE_DATA, KILL_SWITCH, OPERATOR_ACTION)


def _resolve(value: SecretStr, what: str) -> SecretStr:
    raw = value.get_secret_value()
    if raw.startswith("env:"):
        name = raw[4:]
        raw = os.environ.get(name, "")
        if not raw:
            raise ValueError(f"{what} names environment variable {name}, which is not set")
    if not raw:
        raise ValueError(f"{what} is empty")
    return SecretStr(raw)


class TelegramSettings(BaseModel):
    """A Telegram chat reached through the Bot API (``base_url`` for a self-hosted Bot API server)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["telegram"]
    bot_token: SecretStr
    chat_id: Union[int, str]
    base_url: str = "https://api.telegram.org"
    timeout_s: float = Field(10.0, gt=0, le=120)

    @field_validator("bot_token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return _resolve(value, "bot_token")


class WebhookSettings(BaseModel):
    """A URL that receives each notification as JSON, signed with HMAC-SHA256 of ``secret``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr
    timeout_s: float = Field(10.0, gt=0, le=120)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        value = _resolve(value, "secret")
        if len(value.get_secret_value()) < 16:
            raise ValueError("secret must be at least 16 characters")
        return value


ChannelSettings = Annotated[Union[TelegramSettings, WebhookSettings], Field(discriminator="type")]


class Route(BaseModel):
    """Which accounts' events of which kinds go to ``channel`` (``"*"`` matches all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    channel: str
    accounts: list[str] = ["*"]
    events: list[str] = ["*"]

    @field_validator("events")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v != "*" and v not in EventKind.ALL]
        if unknown:
            raise ValueError(f"unknown event kind(s) {unknown}; known: {', '.join(EventKind.ALL)}")
        return value

    def matches(self, account: Optional[str], kind: str) -> bool:
        """True when this route takes ``kind`` events of ``account`` (None: engine-wide events)."""
        account_ok = "*" in self.accounts or account is None or account in self.accounts
        return account_ok and ("*" in self.events or kind in self.events)


class RateLimit(BaseModel):
    """At most ``per_minute`` messages per channel, after an initial ``burst``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per_minute: float = Field(20.0, gt=0, le=6000)
    burst: int = Field(5, ge=1, le=1000)


class NotifySettings(BaseModel):
    """The whole notification settings file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    channels: dict[str, ChannelSettings]
    routes: list[Route]
    rate_limit: RateLimit = RateLimit()

    @model_validator(mode="after")
    def _routes_name_channels(self) -> "NotifySettings":
        for route in self.routes:
            if route.channel not in self.channels:
                raise ValueError(f"route names channel {route.channel!r}, which is not in channels")
        return self


def load_notify_settings(path: Path) -> NotifySettings:
    """Read and check the settings file; a problem raises ``ConfigError`` naming the key."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"notification settings {path}: {exc}") from None
    try:
        return NotifySettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"notification settings {path}: {where}: {first['msg']}") from None
