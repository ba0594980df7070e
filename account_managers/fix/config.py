"""Settings of the FIX broker (its ``brokerConfig`` and ``accountConfig`` keys)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field, SecretStr, field_validator, model_validator

from maotrade.config import AccountSettings, BrokerSettings, is_loopback_host


class FIXBrokerSettings(BrokerSettings):
    """brokerConfig of a FIX 4.4 counterparty (the session we initiate)."""

    host: str = Field(min_length=1, description="acceptor host name or address")
    port: int = Field(gt=0, lt=65536, description="acceptor TCP port")
    sender_comp_id: str = Field(min_length=1, description="our SenderCompID (tag 49)")
    target_comp_id: str = Field(min_length=1, description="the broker's TargetCompID (tag 56)")
    # The FIX HeartBtInt (tag 108); the worker's own heartbeat to the engine stays at 1 s
    # (FIXAccountManager.worker_heartbeat_interval).
    heartbeat_interval: float = Field(30.0, gt=0, le=3600, description="FIX HeartBtInt, seconds")
    fix_version: str = Field("FIX.4.4", description="BeginString (tag 8); only FIX.4.4 is supported")
    reset_on_logon: bool = Field(False, description="send ResetSeqNumFlag=Y and start both sides at 1")
    market_data: bool = Field(True, description="the counterparty serves MarketDataRequest (35=V)")
    request_positions: bool = Field(False, description="ask RequestForPositions (35=AN) for the portfolio")
    test_request_grace: float = Field(0.2, ge=0, le=5,
                                      description="extra fraction of HeartBtInt before a TestRequest")
    tls: bool = Field(False, description="wrap the session in TLS (required for a non-loopback host)")
    tls_ca_file: Optional[str] = Field(None, description="CA bundle the acceptor's certificate must chain to; "
                                                         "default: the system's")
    tls_server_name: Optional[str] = Field(None, description="name to verify the certificate against; "
                                                             "default: host")
    allow_plaintext: bool = Field(False, description="allow plain TCP to a non-loopback host (only inside a "
                                                     "tunnel you trust: the Logon carries the password)")
    # A FIX gateway is usually close by: reconnect sooner than the generic defaults.
    reconnect_base: float = Field(2.0, gt=0)
    reconnect_max: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _tls_off_loopback(self):
        if not self.tls and not self.allow_plaintext and not is_loopback_host(self.host):
            raise ValueError(f"FIX to {self.host} needs tls true (the Logon carries the password), "
                             "or allow_plaintext true inside a trusted tunnel")
        return self

    @field_validator("fix_version")
    @classmethod
    def _only_fix44(cls, value: str) -> str:
        if value != "FIX.4.4":
            raise ValueError(f"fix_version {value!r} is not supported; use 'FIX.4.4'")
        return value


class FIXAccountSettings(AccountSettings):
    """accountConfig of a FIX account."""

    account: str = Field(min_length=1, description="Account (tag 1) sent on every order")
    username: Optional[str] = Field(None, description="Username (tag 553) on Logon")
    password: Optional[SecretStr] = Field(None, description="Password (tag 554) on Logon")
    currency: str = Field("USD", min_length=3, max_length=3, description="currency of the account")
