"""Settings of the Interactive Brokers Account Manager (``brokerConfig``/``accountConfig``)."""
from __future__ import annotations

from pydantic import Field

from maotrade.config import AccountSettings, BrokerSettings


class IBBrokerSettings(BrokerSettings):
    """brokerConfig of an IB account; every key has a default.

    ``timeout``, ``max_retries``, ``reconnect_base`` and ``reconnect_max`` are the base
    class keys; the defaults below suit a local TWS or Gateway.
    """

    tws_host: str = Field("127.0.0.1", min_length=1, description="host of TWS or IB Gateway")
    tws_port: int = Field(7497, gt=0, lt=65536,
                          description="7497 TWS paper, 7496 TWS live, 4002/4001 Gateway paper/live")
    client_id: int = Field(1, ge=0, description="API clientId; unique per connection to one TWS")
    reconnect_base: float = Field(5.0, gt=0)
    reconnect_max: float = Field(120.0, gt=0)
    commission_wait: float = Field(2.0, ge=0, description="seconds to hold a fill for its commission report")
    max_requests_per_second: int = Field(45, gt=0, le=50,
                                         description="API messages per second (TWS allows 50)")
    historical_per_10min: int = Field(60, gt=0, description="historical requests per 10 minutes")
    historical_same_contract_2s: int = Field(5, gt=0,
                                             description="historical requests per contract in 2 seconds")
    bars_what_to_show: str = Field("MIDPOINT", pattern="^(TRADES|MIDPOINT|BID|ASK)$",
                                   description="price source of real-time and historical bars")
    use_rth: bool = Field(False, description="only data from regular trading hours")


class IBAccountSettings(AccountSettings):
    """accountConfig of an IB account."""

    account: str = Field(min_length=2, max_length=32, pattern=r"^[A-Za-z0-9]+$",
                         description="IB account code, e.g. DU123456 (paper) or U1234567")
