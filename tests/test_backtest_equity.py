"""The equity curve rebuilt after the replay equals a valuation made bar by bar: cash
plus the open P&L of every position at its instrument's last close, exactly (not
approximately), with several instruments, long and short positions, brackets, amends,
cancels, an early stop and bars of two instruments ending together."""
import random

import pytest

from maotrade.backtest import BacktestConfig, prepare, run_backtest
from maotrade.bars import make_bar
from maotrade.positions import Position
from maotrade.strategy import Strategy

T0 = 1_704_067_200_000


def walk(epic, time_frame, count, price, seed):
    rng, bars = random.Random(seed), []
    for i in range(count):
        open_ = price
        price *= 1 + rng.gauss(0, 0.002)
        spread = abs(rng.gauss(0, 0.001)) * price
        bars.append(make_bar(epic, time_frame, T0 + i * time_frame * 1000, open_, max(open_, price) + spread,
                             min(open_, price) - spread, price))
    return bars


class RandomTrader(Strategy):
    """Seeded random requests of every kind on every bar it is given."""

    def on_start(self):
        self.rng, self.ids, self.seen = random.Random(self.params["seed"]), [], 0
        for epic, time_frame in self.params["subscriptions"]:
            self.subscribe(epic, time_frame)

    def on_market_data(self, bar):
        self.seen += 1
        if self.seen == self.params.get("stop_after"):
            self.stop()
        rng, close, epic = self.rng, bar["close"], bar["epic"]
        roll = rng.random()
        if roll < 0.05:
            side = rng.choice((1, -1))
            kind = rng.choice(("MARKET", "LIMIT", "STOP"))
            price = None if kind == "MARKET" else close * (1 + rng.choice((-1, 1)) * 0.001)
            self.ids.append(self.open_order(
                epic, side * rng.choice((1, 3)), order_type=kind, price=price,
                stop_loss=close * (1 - side * 0.004) if rng.random() < 0.6 else None,
                take_profit=close * (1 + side * 0.006) if rng.random() < 0.6 else None))
        elif roll < 0.06 and self.ids:
            self.cancel_order(rng.choice(self.ids))
        elif roll < 0.07:
            self.close_order(epic)
        elif roll < 0.08 and self.ids:
            self.amend_order(rng.choice(self.ids), stop_loss=close * rng.choice((0.99, 1.01)))


def valued_bar_by_bar(result, timeline, initial):
    """The reference: replay the fills on their bars and value the account after each bar."""
    fills = {}
    for order, fill in result.fills:
        fills.setdefault((order.epic, fill.time), []).append((fill.qty if order.qty > 0 else -fill.qty, fill))
    positions, balance, last_close = {}, initial, {}
    dates, equity, exposed, previous_end = [], [], [], None
    for bar in timeline[:result.bars]:
        epic = bar["epic"]
        for qty, fill in fills.pop((epic, bar["date"]), []):
            position = positions.setdefault(epic, Position(epic))
            balance += position.apply_fill(qty, fill.price) - fill.commission
        last_close[epic] = bar["close"]
        value, held = balance, False
        for name, position in positions.items():
            if position.qty:
                held = True
                value += (last_close[name] - position.avg_price) * position.qty
        end = bar["date"] + bar["time_frame"] * 1000
        if end == previous_end:
            equity[-1], exposed[-1] = value, held or exposed[-1]
        else:
            dates.append(bar["date"])
            equity.append(value)
            exposed.append(held)
            previous_end = end
    assert not fills, "every fill was on a replayed bar"
    return dates, equity, exposed


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stop_after", [None, 900])
def test_equity_after_the_run_is_the_bar_by_bar_valuation(seed, stop_after):
    data = {"A": walk("A", 60, 1200, 100.0, seed), "B": walk("B", 120, 600, 50.0, seed + 10),
            "C": walk("C", 300, 240, 20.0, seed + 20)}
    prepared = prepare(data)
    params = {"seed": seed, "stop_after": stop_after,
              "subscriptions": [("A", 60), ("B", 120), ("C", 300), ("A", 300)]}
    result = run_backtest(RandomTrader, params, prepared,
                          BacktestConfig("A", 60, initial_balance=10_000.0, commission=0.0002, slippage=0.0001,
                                         keep_going=True))
    assert len(result.fills) > 50 and any(o.qty < 0 and o.filled_qty for o in result.orders)
    dates, equity, exposed = valued_bar_by_bar(result, prepared.timeline, 10_000.0)
    assert len(dates) < result.bars, "bars of several instruments ended together"
    assert result.dates == dates
    assert result.equity == equity  # exactly: the same arithmetic in the same order
    assert result.metrics["exposure"] == sum(exposed) / len(exposed)


def test_an_integer_initial_balance_stays_one_until_the_first_trade():
    bars = walk("A", 60, 50, 100.0, 1)
    result = run_backtest(RandomTrader, {"seed": 3, "subscriptions": [("A", 60)]}, bars,
                          BacktestConfig("A", 60, initial_balance=10_000))
    first_fill = min(fill.time for _, fill in result.fills)
    untouched = [value for date, value in zip(result.dates, result.equity) if date < first_fill]
    assert untouched and all(type(value) is int and value == 10_000 for value in untouched)
