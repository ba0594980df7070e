"""Settings of the IG broker (its ``brokerConfig`` and ``accountConfig`` keys)."""
from __future__ import annotations

from pydantic import Field

from maotrade.config import AccountSettings, BrokerSettings


class IGBrokerSettings(BrokerSettings):
    """brokerConfig of IG; every key has a default (IG's public demo and live gateways)."""

    endpoint_demo: str = Field("https://demo-api.ig.com/gateway/deal", description="REST base URL, demo")
    endpoint_prod: str = Field("https://api.ig.com/gateway/deal", description="REST base URL, live")
    currency_code: str = Field("GBP", min_length=3, max_length=3, description="currencyCode of new deals")
    expiry: str = Field("-", min_length=1, description="expiry sent with deals ('-' for CFDs and DFBs)")
    lightstreamer_adapter_set: str = Field("", description="adapter set; empty is the server default")
    confirm_attempts: int = Field(5, ge=1, le=50, description="GET /confirms tries before waiting for the stream")
    confirm_interval: float = Field(0.2, gt=0, le=10, description="seconds between /confirms tries")
    # IG's published limits (per minute); the client-side throttle keeps under them.
    app_non_trading_per_minute: int = Field(60, ge=1)
    account_trading_per_minute: int = Field(100, ge=1)
    account_non_trading_per_minute: int = Field(30, ge=1)
    stream_keepalive_ms: int = Field(0, ge=0, description="keepalive asked of Lightstreamer; 0: server's")
    stream_stalled_ms: int = Field(2000, gt=0, description="silence before the stream counts as stalled")
    stream_reconnect_ms: int = Field(3000, gt=0, description="wait on a stalled stream before it counts as dropped")
    stream_connect_timeout: float = Field(10.0, gt=0, description="seconds to wait for the stream at login")
    history_page_size: int = Field(500, ge=10, le=5000, description="bars per page of GET /prices")
    history_wait_max: float = Field(60.0, gt=0, description="seconds a history download may wait for a request slot")
    resync_interval: float = Field(0.0, ge=0, description="seconds between background portfolio checks; 0 off")


class IGAccountSettings(AccountSettings):
    """accountConfig of IG: login, API key and the account to trade."""

    user: str = Field(min_length=1)
    password: str = Field(min_length=1)
    apiKey: str = Field(min_length=1)
    accountId: str = Field(min_length=1)
    demo: bool = True
