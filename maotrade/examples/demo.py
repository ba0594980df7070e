"""The demo strategy run by ``maotrade start --account 123``: the moving-average crossover
of ``ma_cross`` on one-second bars, tuned to trade within seconds.

It exists to show the whole path working (bars in, orders out, fills back), not to make
money. Defaults (any can be overridden with ``--param``): ``epic`` EURUSD, ``qty`` 1000,
``fast`` 2, ``slow`` 5, ``time_frame`` 1, ``stop_loss`` 0.002 and ``take_profit`` 0.004
(fractions of the entry price).
"""
from __future__ import annotations

from maotrade.examples.ma_cross import MovingAverageCross

DEMO_DEFAULTS = {"epic": "EURUSD", "qty": 1000, "fast": 2, "slow": 5, "time_frame": 1,
                 "stop_loss": 0.002, "take_profit": 0.004}


class DemoStrategy(MovingAverageCross):
    """``MovingAverageCross`` with fast demo defaults."""

    def __init__(self, params=None):
        super().__init__({**DEMO_DEFAULTS, **(params or {})})
