"""Settings of the paper broker (its ``brokerConfig`` and ``accountConfig`` keys)."""
from __future__ import annotations

from typing import Dict, Optional

from pydantic import Field, model_validator

from maotrade.config import AccountSettings, BrokerSettings


class PaperBrokerSettings(BrokerSettings):
    """brokerConfig of the paper broker; every key has a default."""

    seed: int = Field(42, description="random-walk seed; same seed, same prices")
    instruments: Dict[str, float] = Field(
        default_factory=lambda: {"EURUSD": 1.0850, "GBPUSD": 1.2650, "SPY": 450.0, "ES_FUT": 4500.0},
        description="broker epic -> starting mid price")
    spread: float = Field(0.0001, ge=0, lt=0.1, description="bid/ask spread as a fraction of mid")
    volatility: float = Field(0.0002, ge=0, lt=0.1, description="std dev of one price step, fraction")
    price_interval: float = Field(0.25, gt=0, description="seconds between price steps")
    commission: float = Field(0.0, ge=0, lt=0.1, description="commission as a fraction of notional")
    margin_rate: float = Field(0.05, ge=0, le=1, description="margin as a fraction of notional")
    state_file: Optional[str] = Field(None, description="broker-side SQLite file; default under the data dir")
    outage_file: Optional[str] = Field(
        None, description="simulated outage: while this file exists the broker is unreachable")
    # A paper broker is local: reconnect fast.
    reconnect_base: float = Field(1.0, gt=0)
    reconnect_max: float = Field(30.0, gt=0)
    replay_file: Optional[str] = Field(
        None, description="replay mode: OHLCV bars (CSV or Parquet) that replace the random walk of replay_epic")
    replay_epic: Optional[str] = Field(None, description="broker epic whose prices come from replay_file")
    replay_time_frame: int = Field(60, gt=0, description="seconds per replayed bar (finer data is aggregated)")
    replay_slippage: float = Field(0.0, ge=0, lt=0.1,
                                   description="fraction of price lost on market and stop fills when replaying")

    @model_validator(mode="after")
    def _replay_needs_an_epic(self):
        if self.replay_file and not self.replay_epic:
            raise ValueError("replay_file needs replay_epic (the broker epic it holds)")
        return self


class PaperAccountSettings(AccountSettings):
    """accountConfig of the paper broker."""

    initial_balance: float = Field(100_000.0, gt=0, description="starting cash")
    currency: str = Field("USD", min_length=3, max_length=3)
