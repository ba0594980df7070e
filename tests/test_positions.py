"""Position arithmetic, checked against hand-computed values."""
import pytest

from maotrade.positions import Position


def test_add_reduce_and_flip():
    p = Position("X")
    assert p.apply_fill(10, 100.0) == 0
    assert p.apply_fill(10, 110.0) == 0
    assert p.avg_price == pytest.approx(105.0)
    assert p.apply_fill(-5, 120.0) == pytest.approx(75.0)  # (120-105)*5
    assert p.qty == 15 and p.avg_price == pytest.approx(105.0)
    assert p.apply_fill(-20, 100.0) == pytest.approx(-75.0)  # closes 15 at -5 each, opens 5 short
    assert p.qty == -5 and p.avg_price == pytest.approx(100.0)
    assert p.unrealized_pnl(90.0) == pytest.approx(50.0)
    assert p.apply_fill(5, 90.0) == pytest.approx(50.0)
    assert p.is_flat and p.avg_price == 0.0
    assert p.realized_pnl == pytest.approx(50.0)


def test_short_from_flat():
    p = Position("X")
    p.apply_fill(-3, 50.0)
    assert p.unrealized_pnl(40.0) == pytest.approx(30.0)
    assert p.apply_fill(1, 60.0) == pytest.approx(-10.0)
    assert p.qty == -2 and p.avg_price == 50.0
