"""Settings of the ccxt broker (its ``brokerConfig`` and ``accountConfig`` keys)."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from pydantic import Field, SecretStr, field_validator

from maotrade.config import AccountSettings, BrokerSettings


class CCXTBrokerSettings(BrokerSettings):
    """brokerConfig of the ccxt broker; every key but ``exchange`` has a default."""

    exchange: str = Field(min_length=2, description="ccxt exchange id: binance, binanceusdm, ...")
    testnet: bool = Field(False, description="use the exchange's testnet/sandbox URLs")
    urls: Dict[str, Any] = Field(default_factory=dict,
                                 description="merged into ccxt's urls['api'] (e.g. a local or proxy endpoint)")
    options: Dict[str, Any] = Field(default_factory=dict, description="merged into ccxt's options")
    recv_window: int = Field(5000, ge=1, le=60000, description="Binance recvWindow, milliseconds")
    market_types: List[str] = Field(default_factory=list,
                                    description="ccxt fetchMarkets types; empty: spot for binance, linear for binanceusdm")
    time_frames: List[int] = Field(default_factory=lambda: [60, 300],
                                   description="bar sizes in seconds built from the trade stream")
    poll_interval: float = Field(2.0, gt=0, description="seconds between REST polls while a stream is down")
    stream_retry: float = Field(1.0, gt=0, description="seconds before a dropped stream is watched again")
    status_delay: float = Field(0.5, ge=0, description="seconds before an order of unknown outcome is queried")
    rate_limiter: Literal["rolling_window", "leaky_bucket"] = Field(
        "rolling_window", description="ccxt's limiter: weight per minute as Binance counts it (bursts "
                                      "allowed), or one request per rate-limit interval")
    rate_limit_wait_max: float = Field(120.0, gt=0, description="longest pause honoured on 429/418, seconds")
    balance_assets: List[str] = Field(default_factory=list,
                                      description="assets shown in account info; empty: every non-zero one")
    currency: str = Field("USDT", min_length=2, description="asset the balance and equity are reported in")
    user_streams: bool = Field(True, description="watch orders and trades by websocket; false: REST "
                                                 "polling every poll_interval only")
    builder_fee: bool = Field(False, description="Aster: let ccxt approve and charge its builder fee on orders")
    signer_address: str = Field("", description="Aster: the API signer's address when it is not the wallet's "
                                                "own (ccxt options.signerAddress)")
    # A local exchange session: reconnect faster than a broker with a login.
    reconnect_base: float = Field(2.0, gt=0)
    reconnect_max: float = Field(60.0, gt=0)

    @field_validator("time_frames")
    @classmethod
    def _positive_frames(cls, value: List[int]) -> List[int]:
        if not value or any(v <= 0 for v in value):
            raise ValueError("time_frames must be a non-empty list of positive seconds")
        return value


class CCXTAccountSettings(AccountSettings):
    """accountConfig of the ccxt broker: the exchange's credentials, every one secret.

    Which are needed is the exchange's (ccxt ``requiredCredentials``): Binance an API key
    and secret, Aster the private key that signs its v3 requests (EIP-712).
    """

    apiKey: Optional[SecretStr] = Field(None, description="exchange API key (Binance)")
    secret: Optional[SecretStr] = Field(None, description="exchange API secret (Binance)")
    privateKey: Optional[SecretStr] = Field(None, description="wallet private key, hex (Aster)")
