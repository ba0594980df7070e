"""Bars built from prices: a bar sent as completed is never sent again."""
from __future__ import annotations

from maotrade.bars import BarBuilder


def test_a_price_dated_in_a_bar_the_timer_closed_does_not_reopen_it():
    builder = BarBuilder("INFY", 1)
    assert builder.update(1_000_100, 10.0, 5) == []
    [closed] = builder.close_due(1_001_000)  # the second is over on the worker's clock
    assert (closed["date"], closed["close"], closed["completed"]) == (1_000_000, 10.0, True)
    # A price stamped in that second arrives after the timer closed it: late, ignored.
    assert builder.update(1_000_900, 11.0, 5) == [] and builder.current is None
    assert builder.update(1_001_200, 12.0, 5) == []
    [following] = builder.update(1_002_100, 13.0, 5)
    assert (following["date"], following["open"], following["close"]) == (1_001_000, 12.0, 12.0)


def test_a_price_dated_in_the_bar_just_completed_by_a_newer_price_is_ignored():
    builder = BarBuilder("INFY", 60)
    builder.update(60_000, 1.0)
    [first] = builder.update(120_500, 2.0)
    assert first["date"] == 60_000
    assert builder.update(119_000, 9.0) == [] and builder.current["high"] == 2.0
