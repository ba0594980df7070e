"""Backtest figures against values computed by hand on small fixed series."""
import math

import pytest

from maotrade.backtest import metrics
from maotrade.backtest.trades import build_trades

DAY_MS = 86_400_000


def test_summary_of_a_three_bar_curve():
    # Daily bars; equity 100 -> 110 -> 99 -> 121.
    # returns 0.1, -0.1, 0.2222..: mean 0.074074, sample std 0.162668
    # 3 bars cover 3 days = 3/365 years, so 365 bars per year.
    m = metrics.summarize([110.0, 99.0, 121.0], 100.0, 0, 2 * DAY_MS, 86_400,
                          [50.0, -20.0, 30.0, -10.0], [True, False, True, True])
    assert m["total_return"] == pytest.approx(0.21)
    assert m["years"] == pytest.approx(3 / 365)
    assert m["annualised_return"] == pytest.approx(1.21 ** (365 / 3) - 1)
    assert m["sharpe"] == pytest.approx(0.074074074 / 0.162668083 * math.sqrt(365), rel=1e-6)
    assert m["sharpe"] == pytest.approx(8.69982, rel=1e-5)
    # downside deviation sqrt((0 + 0.1^2 + 0) / 3) = 0.057735
    assert m["sortino"] == pytest.approx(24.51169, rel=1e-5)
    # peak 110 (bar 1), trough 99 (bar 2): 10% down, regained at bar 3: 2 bars, 2 days
    assert m["max_drawdown"] == pytest.approx(0.1)
    assert m["max_drawdown_duration_bars"] == 2 and m["max_drawdown_duration_s"] == 2 * 86_400
    assert m["max_drawdown_recovered"] is True
    assert m["trades"] == 4 and m["win_rate"] == 0.5
    assert m["profit_factor"] == pytest.approx(80 / 30)
    assert m["exposure"] == 0.75


def test_drawdown_from_the_initial_balance_that_never_recovers():
    dd = metrics.max_drawdown([100.0, 90.0, 95.0, 80.0, 85.0])
    assert dd.depth == pytest.approx(0.2) and (dd.peak, dd.trough, dd.recovery) == (0, 3, None)
    assert dd.duration == 4
    assert metrics.drawdown_series([100.0, 90.0, 120.0, 60.0]) == pytest.approx([0, 0.1, 0, 0.5])


def test_degenerate_series():
    assert metrics.sharpe([0.01], 252) is None, "one return has no standard deviation"
    assert metrics.sharpe([0.01, 0.01], 252) is None
    assert metrics.sortino([0.01, 0.02], 252) is None, "no losing bar: no downside deviation"
    assert metrics.profit_factor([5.0, 3.0]) == math.inf and metrics.profit_factor([]) is None
    assert metrics.win_rate([]) is None
    flat = metrics.summarize([], 1000.0, 0, 0, 60, [], [])
    assert flat["total_return"] == 0 and flat["trades"] == 0 and flat["exposure"] == 0


def test_round_trips_with_scaling_and_a_flip():
    fills = [("X", 10, 100.0, 1000, 1.0),   # open long 10 @ 100
             ("X", 10, 110.0, 2000, 1.1),   # add 10 @ 110 -> avg 105
             ("X", -5, 120.0, 3000, 0.6),   # take 5 off: +75
             ("X", -25, 90.0, 4000, 2.5)]   # close 15 (-225) and open short 10 @ 90
    long, short = build_trades(fills)
    assert (long.side, long.qty, long.entry_price) == ("long", 20, pytest.approx(105.0))
    assert long.exit_time == 4000 and long.exit_price == pytest.approx((120 * 5 + 90 * 15) / 20)
    assert long.pnl == pytest.approx(75 - 225)
    assert long.commission == pytest.approx(1.0 + 1.1 + 0.6 + 2.5 * 15 / 25)
    assert long.net_pnl == pytest.approx(-150 - long.commission)
    assert (short.side, short.qty, short.entry_price, short.is_closed) == ("short", 10, 90.0, False)
    assert short.commission == pytest.approx(2.5 * 10 / 25)
