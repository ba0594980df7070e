"""Several instruments and time frames in one backtest: bars merged in time order through
the same matching, aggregated subscriptions, exit reasons, per-instrument figures and the
buy-and-hold benchmark, all checked by hand."""
import pytest

from maotrade.backtest import BacktestConfig, StrategyFailed, run_backtest
from maotrade.bars import make_bar
from maotrade.strategy import Strategy

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z in ms


def bars(epic, time_frame, rows):
    return [make_bar(epic, time_frame, T0 + i * time_frame * 1000, *row) for i, row in enumerate(rows)]


# A: one-minute bars; B: two-minute bars.
A = bars("A", 60, [(100, 101, 99, 100), (100, 102, 99, 101), (101, 103, 100, 102), (102, 104, 101, 103),
                   (103, 104, 90, 95), (95, 96, 94, 95)])
B = bars("B", 120, [(50, 51, 49, 50), (50, 52, 49, 51), (51, 60, 50, 59)])


class Recorder(Strategy):
    """Subscribes to ``subscriptions``; runs ``script[(epic, time_frame, n)]`` on the n-th bar."""

    def on_start(self):
        self.seen, self.counts = [], {}
        for epic, time_frame in self.params["subscriptions"]:
            self.subscribe(epic, time_frame)

    def on_market_data(self, bar):
        key = (bar["epic"], bar["time_frame"])
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        self.seen.append((bar["epic"], bar["time_frame"], bar["date"], bar["open"], bar["high"], bar["low"],
                          bar["close"]))
        for action, kwargs in self.params.get("script", {}).get((*key, n), []):
            getattr(self, action)(**kwargs)


def run(script=None, subscriptions=(("A", 60), ("B", 120)), **config):
    holder = {}

    class Probe(Recorder):
        def on_stop(self):
            holder["strategy"] = self

    result = run_backtest(Probe, {"subscriptions": subscriptions, "script": script or {}},
                          {"A": A, "B": B}, BacktestConfig("A", 60, initial_balance=10_000, **config))
    return holder["strategy"], result


def test_bars_of_every_instrument_arrive_in_the_order_they_end_and_longer_frames_aggregate():
    strategy, result = run(subscriptions=[("A", 60), ("A", 180), ("B", 120)])
    ends = [(date + tf * 1000, epic) for epic, tf, date, *_ in strategy.seen]
    assert ends == sorted(ends, key=lambda e: e[0]), "never a bar before one that ended earlier"
    # The 3-minute A bar over A's first three minutes, delivered right after the third one.
    three = [s for s in strategy.seen if s[1] == 180]
    assert three[0] == ("A", 180, T0, 100, 103, 99, 102) and three[1] == ("A", 180, T0 + 180_000, 102, 104, 90, 95)
    third = strategy.seen.index(("A", 60, T0 + 120_000, 101, 103, 100, 102))
    assert strategy.seen[third + 1][:2] == ("A", 180)
    assert result.bars == len(A) + len(B)
    assert len(result.dates) == 6, "one equity point per moment, however many instruments end there"


def test_exit_reasons_per_instrument_figures_and_buy_and_hold():
    script = {("A", 60, 0): [("open_order", {"epic": "A", "qty": 10, "stop_loss": 92.0})],
              ("B", 120, 0): [("open_order", {"epic": "B", "qty": 20, "take_profit": 55.0})],
              ("A", 60, 4): [("open_order", {"epic": "A", "qty": 5})]}
    _, result = run(script)
    a_trades = [t for t in result.trades if t.epic == "A"]
    b_trades = [t for t in result.trades if t.epic == "B"]
    # A: bought at bar 1's open (100), stopped at 92 inside bar 4; then bought at bar 5's open (95), open at the end.
    assert [(t.entry_price, t.exit_price, t.exit_reason) for t in a_trades] == [(100, 92.0, "stop loss"),
                                                                               (95, 95, "end")]
    # B: bought at its bar 1's open (50), take profit at 55 in bar 2.
    assert [(t.entry_price, t.exit_price, t.exit_reason) for t in b_trades] == [(50, 55.0, "take profit")]
    figures = result.instruments
    assert figures["A"]["exits"] == {"stop loss": 1, "end": 1} and figures["B"]["exits"] == {"take profit": 1}
    assert figures["A"]["net_pnl"] == pytest.approx(-80.0) and figures["B"]["net_pnl"] == pytest.approx(100.0)
    assert figures["A"]["buy_and_hold_return"] == pytest.approx(95 / 100 - 1)
    assert figures["B"]["buy_and_hold_return"] == pytest.approx(59 / 50 - 1)
    assert result.metrics["buy_and_hold_return"] == pytest.approx(((95 / 100 - 1) + (59 / 50 - 1)) / 2)
    assert result.metrics["final_equity"] == pytest.approx(10_000 - 80 + 100)


def test_a_signal_exit_and_an_order_in_an_instrument_without_data():
    script = {("A", 60, 0): [("open_order", {"epic": "A", "qty": 1})],
              ("A", 60, 2): [("close_order", {"epic": "A"}), ("open_order", {"epic": "C", "qty": 1})]}
    strategy, result = run(script)
    [trade] = result.trades
    assert (trade.entry_price, trade.exit_price, trade.exit_reason) == (100, 102, "signal")
    [rejected] = [o for o in result.orders if o.epic == "C"]
    assert rejected.status == "REJECTED" and "this backtest trades A, B" in rejected.reason


def test_a_callback_error_stops_the_run_unless_keep_going():
    class Broken(Recorder):
        def on_market_data(self, bar):
            if bar["epic"] == "B":
                raise ZeroDivisionError("boom")

    with pytest.raises(StrategyFailed, match=r"raised ZeroDivisionError: boom in on_market_data\(B 120s") as info:
        run_backtest(Broken, {"subscriptions": [("A", 60), ("B", 120)]}, {"A": A, "B": B},
                     BacktestConfig("A", 60))
    assert "ZeroDivisionError: boom" in info.value.traceback
    result = run_backtest(Broken, {"subscriptions": [("A", 60), ("B", 120)]}, {"A": A, "B": B},
                          BacktestConfig("A", 60, keep_going=True))
    assert result.strategy_errors == 3 and result.error_counts == {"on_market_data ZeroDivisionError": 3}
    assert result.first_error.startswith("in on_market_data(B 120s bar at 2024-01-01T00:00:00Z)")
    assert result.bars == len(A) + len(B)


def test_a_subscription_that_is_not_a_multiple_of_the_data_is_refused():
    class Odd(Recorder):
        def dispatch(self, msg):
            if msg["type"] == "error":
                self.errors = getattr(self, "errors", []) + [msg["reason"]]
            super().dispatch(msg)

        def on_stop(self):
            assert self.errors == ["this backtest replays B at 120s: subscribe to 120s or a multiple of it, not 90s"]

    run_backtest(Odd, {"subscriptions": [("B", 90)]}, {"A": A, "B": B}, BacktestConfig("A", 60))
