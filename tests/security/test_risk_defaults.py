"""Review finding M5 (rules): API and webhook orders fail closed without size limits, and
no order from any source carries an amount that could make a fill or P&L infinite."""
from __future__ import annotations

import pytest

from engine.risk import RiskEngine, RiskSettings
from maotrade.errors import OrderRefused
from maotrade.order import BaseOrder
from tests.test_risk_rules import State


def _order(qty, source="strategy", **fields):
    return BaseOrder(client_order_id=f"o-{source}-{len(str(qty))}", account="A", epic="SPY", qty=qty,
                     source=source, **fields)


def _code(risk, order):
    with pytest.raises(OrderRefused) as info:
        risk.check(order, State())
    return info.value.code


@pytest.mark.parametrize("source", ["api", "webhook"])
def test_m5_outside_orders_need_explicit_size_limits(source):
    risk = RiskEngine(RiskSettings())
    assert _code(risk, _order(1, source)) == "limits_required"
    risk.set_account_limits("A", {"max_order_qty": 10})
    assert _code(risk, _order(1, source)) == "limits_required"
    risk.set_account_limits("A", {"max_order_qty": 10, "max_order_notional": 5000})
    risk.check(_order(1, source), State())
    assert _code(risk, _order(11, source)) == "max_order_qty"


def test_m5_strategy_orders_keep_working_without_limits():
    RiskEngine(RiskSettings()).check(_order(5), State())


@pytest.mark.parametrize("qty", [1e308, -1e300, float("inf"), float("nan"), 5e-324, 2e12])
def test_m5_no_order_carries_an_amount_that_overflows(qty):
    assert _code(RiskEngine(RiskSettings()), _order(qty)) == "invalid_amount"


def test_m5_absurd_prices_are_refused_too():
    assert _code(RiskEngine(RiskSettings()), _order(1, order_type="LIMIT", price=1e-300)) == "invalid_amount"
