"""Settings of the Kite Connect broker (its ``brokerConfig`` and ``accountConfig`` keys)."""
from __future__ import annotations

from typing import Dict, List, Literal, Optional

from pydantic import Field, field_validator

from maotrade.config import AccountSettings, BrokerSettings

Product = Literal["CNC", "MIS", "NRML"]


class KiteBrokerSettings(BrokerSettings):
    """brokerConfig of Kite Connect; every key has a default (Kite's live endpoints, NSE hours)."""

    api_root: str = Field("https://api.kite.trade", description="REST root of Kite Connect")
    ticker_root: str = Field("wss://ws.kite.trade", description="KiteTicker websocket root")
    product: Product = Field("MIS", description="product of new orders: CNC, MIS or NRML")
    products: Dict[str, Product] = Field(default_factory=dict,
                                         description="epicBroker -> product, overriding `product`")
    tick_mode: Literal["quote", "full"] = Field("quote", description="KiteTicker mode of subscribed instruments")
    stop_limit_offset: float = Field(0.0, ge=0, lt=0.2, description=(
        "0: STOP orders go as SL-M; above 0: as SL with a limit this fraction beyond the trigger"))
    market_open: str = Field("09:15", pattern=r"^\d\d:\d\d$", description="session start, exchange time")
    market_close: str = Field("15:30", pattern=r"^\d\d:\d\d$", description="session end, exchange time")
    market_timezone: str = Field("Asia/Kolkata", description="time zone of market_open/market_close")
    trading_days: List[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4],
                                    description="weekdays the market opens (Monday is 0)")
    holidays: List[str] = Field(default_factory=list, description="exchange holidays, YYYY-MM-DD")
    outside_hours: Literal["refuse", "amo"] = Field(
        "refuse", description="orders outside market hours: refused locally, or sent as AMO")
    orders_per_second: float = Field(10.0, gt=0, description="client-side limit of order requests")
    historical_per_second: float = Field(3.0, gt=0, description="client-side limit of historical requests")
    quotes_per_second: float = Field(1.0, gt=0, description="client-side limit of quote requests")
    requests_per_second: float = Field(10.0, gt=0, description="client-side limit of every other request")
    rate_limit_wait: float = Field(2.0, ge=0, description="longest wait for a rate-limit slot, seconds")
    instruments_cache_hours: float = Field(24.0, gt=0, description="age before the instruments dump is refetched")
    poll_interval: float = Field(2.0, gt=0, description="seconds between REST order polls while the ticker is down")
    token_check_interval: float = Field(2.0, gt=0, description="seconds between checks for a new token while expired")
    ticker_connect_timeout: float = Field(10.0, gt=0, description="seconds to wait for the ticker at login")
    ticker_max_delay: float = Field(5.0, ge=5, description="longest wait between ticker reconnects (Kite's minimum 5)")
    ticker_max_tries: int = Field(50, ge=1, le=300, description="ticker reconnects before the account reconnects")

    @field_validator("trading_days")
    @classmethod
    def _weekdays(cls, days: List[int]) -> List[int]:
        if any(d < 0 or d > 6 for d in days):
            raise ValueError("weekdays run from 0 (Monday) to 6 (Sunday)")
        return days


class KiteAccountSettings(AccountSettings):
    """accountConfig of Kite Connect: the app's key and secret, and today's access token."""

    api_key: str = Field(min_length=1)
    api_secret: str = Field(min_length=1)
    access_token: Optional[str] = Field(None, description="today's token (maotrade admin account kite-login)")
    user_id: Optional[str] = Field(None, description="Kite user id, checked against the session if given")
