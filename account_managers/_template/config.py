"""Settings of the broker: every ``brokerConfig`` and ``accountConfig`` key, typed, with
its default and a description (docs/brokers/<name>.md lists the same keys).

Secrets are ``SecretStr``: they are encrypted in the registry, masked in every repr and
redacted from logs; read them with ``.get_secret_value()`` only where they are sent.
"""
from __future__ import annotations

from pydantic import Field, SecretStr

from maotrade.config import AccountSettings, BrokerSettings


class TemplateBrokerSettings(BrokerSettings):
    """brokerConfig: what is the same for every account of this broker."""

    endpoint: str = Field("https://api.example-broker.test", description="REST root (https only)")
    timeout: float = Field(10.0, gt=0, description="seconds before a REST call is abandoned")


class TemplateAccountSettings(AccountSettings):
    """accountConfig: one account's login."""

    user: str = Field(..., min_length=1, description="login name")
    password: SecretStr = Field(..., description="login password (secret)")
