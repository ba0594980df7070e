"""The pre-trade rules of engine.risk on plain engine state: each rule denies the order that
breaks it, for one account and across accounts, and passes the one that does not."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine.risk import KillMode, RiskEngine, RiskSettings, is_reducing, load_settings, merge
from maotrade.errors import ConfigError, OrderRefused
from maotrade.order import BaseOrder, OrderAction


@dataclass
class State:
    """Engine state as the rules see it."""

    positions: dict = field(default_factory=dict)  # (account, epic) -> qty
    working: dict = field(default_factory=dict)  # account -> [BaseOrder]
    prices: dict = field(default_factory=lambda: {"SPY": 100.0, "EURUSD": 1.1})
    pnl: dict = field(default_factory=dict)

    def accounts(self):
        return ["A", "B"]

    def position(self, account, epic):
        return self.positions.get((account, epic), 0.0)

    def open_orders(self, account):
        return self.working.get(account, [])

    def price(self, account, epic):
        return self.prices.get(epic)

    def daily_pnl(self, account):
        return self.pnl.get(account, 0.0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def order(account, qty, epic="SPY", **fields):
    return BaseOrder(client_order_id=f"o{abs(hash((account, qty, epic))) % 10**8}", account=account,
                     epic=epic, qty=qty, **fields)


def refused(risk, state, o) -> str:
    with pytest.raises(OrderRefused) as info:
        risk.check(o, state)
    return info.value.code


def engine(defaults=None, global_=None, **accounts) -> RiskEngine:
    settings = RiskSettings.model_validate({"defaults": defaults or {}, "global": global_ or {}})
    risk = RiskEngine(settings, clock=Clock())
    for account, layer in accounts.items():
        risk.set_account_limits(account, layer)
    return risk


def test_order_size_rules_per_account():
    risk = engine(defaults={"max_order_qty": 100}, B={"max_order_qty": 10, "max_order_notional": 500})
    state = State()
    assert refused(risk, state, order("A", 101)) == "max_order_qty"
    risk.check(order("A", 100), state)
    assert refused(risk, state, order("B", -11)) == "max_order_qty"
    assert refused(risk, state, order("B", 6)) == "max_order_notional"  # 600 > 500
    risk.check(order("B", 5), state)
    assert risk.refused == {"A": {"max_order_qty": 1}, "B": {"max_order_qty": 1, "max_order_notional": 1}}


def test_min_order_value_uses_the_limit_price_and_needs_a_price():
    risk = engine(defaults={"min_order_value": 50})
    state = State()
    assert refused(risk, state, order("A", 1, price=10.0, order_type="LIMIT")) == "min_order_value"
    risk.check(order("A", 1, price=60.0, order_type="LIMIT"), state)
    state.prices.pop("SPY")
    assert refused(risk, state, order("B", 1)) == "no_reference_price"


def test_max_position_counts_working_orders_and_lets_reductions_through():
    risk = engine(defaults={"max_position": 10})
    state = State(positions={("A", "SPY"): 8.0})
    state.working["A"] = [order("A", 2, price=90.0, order_type="LIMIT")]
    assert refused(risk, state, order("A", 1)) == "max_position"  # 8 + 2 working + 1
    risk.check(order("A", -5), state)
    state.positions[("A", "SPY")] = 30.0  # above the limit already: reducing still passes
    risk.check(order("A", -20), state)
    risk.check(order("A", -31), state)  # flips to -1: within the limit
    assert refused(risk, state, order("A", -41)) == "max_position"  # flips to -11
    risk.check(order("B", 10), state)


def test_global_position_limit_sums_accounts():
    risk = engine(global_={"max_position": 15})
    state = State(positions={("A", "SPY"): 10.0})
    assert refused(risk, state, order("B", 6)) == "global_max_position"
    risk.check(order("B", 5), state)
    risk.check(order("B", -20), state)  # B short 20 brings the sum to -10


def test_daily_loss_limit_allows_only_reducing_orders():
    risk = engine(A={"daily_loss_limit": 1000}, global_={"daily_loss_limit": 1500})
    state = State(positions={("A", "SPY"): 5.0}, pnl={"A": -1000.0, "B": -400.0})
    assert refused(risk, state, order("A", 1)) == "daily_loss_limit"
    risk.check(order("A", -5), state)
    risk.check(order("B", 1), state)
    state.pnl["B"] = -600.0
    assert refused(risk, state, order("B", 1)) == "global_daily_loss_limit"


def test_open_orders_and_order_rate():
    risk = engine(defaults={"max_open_orders": 2, "max_orders_per_window": 3, "rate_window_s": 10})
    state = State(working={"A": [order("A", 1, epic="SPY"), order("A", 2, epic="SPY")]})
    assert refused(risk, state, order("A", 1)) == "max_open_orders"
    risk.check(order("A", 1, epic="EURUSD"), state)
    for _ in range(2):
        risk.check(order("B", 1), state)
    risk.check(order("B", 1, epic="EURUSD"), state)
    assert refused(risk, state, order("B", 1, epic="EURUSD")) == "order_rate"
    assert risk.recent("B") == 3
    risk._clock.now += 10.5
    risk.check(order("B", 1, epic="EURUSD"), state)


def test_without_limits_the_engine_keeps_only_one_rate_window_of_order_times():
    # An engine that runs for weeks passes millions of orders: what it keeps for the rate
    # rule must not grow with them (it did, when no limit was set).
    risk = engine()
    state = State()
    for _ in range(500):
        risk._clock.now += 1.0
        risk.check(order("A", 1), state)
    window = risk.limits("A").rate_window_s
    assert risk.recent("A") == window and risk.recent("*") == window
    assert len(risk._times["A"]) <= window + 1 and len(risk._times["*"]) <= window + 1


def test_kill_switch_modes_per_account_and_global():
    risk = engine()
    state = State(positions={("A", "SPY"): 5.0, ("B", "SPY"): 5.0})
    risk.set_kill("A", KillMode.REDUCE_ONLY)
    assert refused(risk, state, order("A", 1)) == "kill_switch_reduce_only"
    risk.check(order("A", -2), state)
    risk.check(order("A", 1, action=OrderAction.CLOSE), state)
    risk.check(order("B", 1), state)
    risk.set_kill("*", KillMode.HALTED)
    assert refused(risk, state, order("B", -1)) == "kill_switch_halted"
    risk.set_kill("*", KillMode.ACTIVE)
    assert risk.mode("A") == KillMode.REDUCE_ONLY and risk.mode("B") == KillMode.ACTIVE
    with pytest.raises(ConfigError, match="kill switch mode"):
        risk.set_kill("A", "off")


def test_overrides_win_over_config_and_reset():
    risk = engine(defaults={"max_order_qty": 100}, A={"max_order_qty": 50})
    assert risk.limits("A").max_order_qty == 50 and risk.limits("B").max_order_qty == 100
    risk.set_override("A", {"max_order_qty": 5})
    assert risk.limits("A").max_order_qty == 5
    risk.clear_override("A")
    assert risk.limits("A").max_order_qty == 50
    assert merge({"max_order_qty": 1.0}, {"max_order_qty": None}).max_order_qty is None


def test_bad_limits_are_one_line_errors_naming_the_key(tmp_path):
    risk = engine()
    with pytest.raises(ConfigError, match="unknown key 'max_qty'"):
        risk.set_account_limits("A", {"max_qty": 1})
    with pytest.raises(ConfigError, match="'max_order_qty'"):
        risk.set_override("A", {"max_order_qty": -1})
    with pytest.raises(ConfigError, match="'max_open_orders'"):
        risk.set_override("A", {"max_open_orders": "3"})
    path = tmp_path / "risk.json"
    path.write_text('{"defaults": {"max_order_qty": 10}, "global": {"max_position": 5}}')
    settings = load_settings(path)
    assert settings.defaults.max_order_qty == 10 and settings.global_.max_position == 5
    path.write_text('{"defaults": {"daily_loss": 10}}')
    with pytest.raises(ConfigError, match="defaults.daily_loss"):
        load_settings(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(path)


def test_is_reducing():
    assert is_reducing(10, -10) and is_reducing(-3, 1)
    assert not is_reducing(10, -11) and not is_reducing(0, -1) and not is_reducing(5, 1)
