"""The backtester end to end: data files in, hand-computed fills, figures and files out."""
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from maotrade.backtest import Backtest, BacktestConfig, DataError, load_bars
from maotrade.backtest.report import write_all
from tests.bt_strategies import ScriptedStrategy
from tests.engine_kit import run_cli

HEADER = "date,open,high,low,close,volume\n"
# One-minute bars from 2024-01-01T00:00Z.
T0 = 1_704_067_200
ROWS = [(100, 101, 99, 100), (102, 103, 101, 102), (104, 105, 103, 104), (103, 104, 95, 96),
        (96, 97, 94, 95), (95, 99, 95, 98)]


def write_csv(path, rows=ROWS, start=T0, step=60):
    path.write_text(HEADER + "".join(f"{start + i * step},{o},{h},{l},{c},1\n" for i, (o, h, l, c) in enumerate(rows)))
    return path


def run(tmp_path, script, **config):
    bars = load_bars([write_csv(tmp_path / "bars.csv")], "X", 60)
    strategy = ScriptedStrategy({"epic": "X", "time_frame": 60, "script": script})
    cfg = BacktestConfig("X", 60, initial_balance=10_000.0, **config)
    return strategy, Backtest(strategy, bars, cfg).run()


def test_market_entry_at_next_open_stop_loss_exit_commission_and_figures(tmp_path):
    strategy, result = run(tmp_path, {"0": [["open", {"qty": 10, "stop_loss": 97.0}]]},
                           commission=0.0005, slippage=0.001)
    [entry, exit_] = [f for _, f in result.fills]
    assert entry.price == pytest.approx(102 * 1.001) and entry.time == (T0 + 60) * 1000
    assert exit_.price == pytest.approx(97 * 0.999) and exit_.time == (T0 + 180) * 1000
    commission = 10 * 102.102 * 0.0005 + 10 * 96.903 * 0.0005
    pnl = (96.903 - 102.102) * 10
    assert result.metrics["final_equity"] == pytest.approx(10_000 + pnl - commission)
    [trade] = result.trades
    assert trade.net_pnl == pytest.approx(pnl - commission) and trade.is_closed
    assert result.metrics["trades"] == 1 and result.metrics["win_rate"] == 0
    # Held at the close of bars 1 and 2 only (stopped out inside bar 3).
    assert result.metrics["exposure"] == pytest.approx(2 / 6)
    # Equity at each close: the entry bar marks 10 units at 102 against 102.102.
    first_commission = 10 * 102.102 * 0.0005
    assert result.equity[1] == pytest.approx(10_000 - first_commission + (102 - 102.102) * 10)
    assert result.equity[2] == pytest.approx(10_000 - first_commission + (104 - 102.102) * 10)
    peak = result.equity[2]
    assert result.metrics["max_drawdown"] == pytest.approx(1 - min(result.equity[3:]) / peak)
    statuses = [s[1] for s in strategy.seen if s[0] == "order"]
    assert statuses == ["NEW", "ACCEPTED", "FILLED", "FILLED"], "entry, then the broker's stop loss close"
    entry, leg = result.orders
    assert [entry.source, leg.source] == ["strategy", "bracket"]
    assert leg.client_order_id == f"{entry.client_order_id}/SL" and leg.status == "FILLED", \
        "the stop loss closes as the entry's bracket leg, named as the engine names it"


def test_limit_cancel_amend_and_refusals(tmp_path):
    script = {"0": [["open", {"qty": 5, "order_type": "LIMIT", "price": 96.0}]],
              "1": [["cancel_last", {}], ["open", {"qty": 5, "order_type": "LIMIT", "price": 103.5}]],
              "2": [["amend_last", {"stop_loss": 94.5}]],
              "3": [["close", {"qty": 2}]],
              "4": [["close", {"qty": 50}], ["open", {"qty": 0}]]}
    strategy, result = run(tmp_path, script)
    cancelled, limit, stop, close, zero = result.orders  # the amend made the stop loss leg before the close
    assert cancelled.status == "CANCELLED" and cancelled.filled_qty == 0
    # The limit at 103.5 placed on bar 1: bar 2 opens at 104 and trades down to 103.
    assert limit.status == "FILLED" and limit.avg_fill_price == 103.5
    # Closing 2 on bar 3 fills at bar 4's open; the amended stop loss takes the other 3 in bar 4.
    assert close.action == "close" and close.avg_fill_price == 96.0 and close.filled_qty == -2
    assert (stop.client_order_id, stop.source, stop.avg_fill_price, stop.filled_qty) == (
        f"{limit.client_order_id}/SL", "bracket", 94.5, -3)
    assert zero.status == "REJECTED" and "non-zero" in zero.reason
    errors = [s[2] for s in strategy.seen if s[0] == "order" and s[2]]
    assert any("non-zero" in e for e in errors)
    [trade] = result.trades
    assert trade.pnl == pytest.approx((96 - 103.5) * 2 + (94.5 - 103.5) * 3)
    assert result.metrics["win_rate"] == 0 and result.metrics["profit_factor"] == 0


def test_data_files_merge_aggregate_and_refuse_bad_input(tmp_path):
    first = write_csv(tmp_path / "a.csv", ROWS[:3])
    second = tmp_path / "b.parquet"
    pq.write_table(pa.table({"Timestamp": [(T0 + (3 + i) * 60) * 1000 for i in range(3)],
                             "Open": [r[0] for r in ROWS[3:]], "High": [r[1] for r in ROWS[3:]],
                             "Low": [r[2] for r in ROWS[3:]], "Close": [r[3] for r in ROWS[3:]]}), second)
    bars = load_bars([second, first], "X", 60)
    assert [b["open"] for b in bars] == [r[0] for r in ROWS]
    [three] = load_bars([second, first], "X", 360)
    assert (three["open"], three["high"], three["low"], three["close"]) == (100, 105, 94, 98)
    iso = tmp_path / "iso.csv"
    iso.write_text("Time,Open,High,Low,Close\n2024-01-01T00:00:00Z,1,2,0.5,1.5\n2024-01-01 00:01:00,1.5,2,1,1\n")
    assert [b["date"] for b in load_bars([iso], "X", 60)] == [T0 * 1000, (T0 + 60) * 1000]
    with pytest.raises(DataError, match="two bars at 2024-01-01T00:00:00"):
        load_bars([first, first], "X", 60)
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + f"{T0},100,99,98,100,1\n")
    with pytest.raises(DataError, match=r"bad.csv row 2: high 99.0"):
        load_bars([bad], "X", 60)
    bad.write_text(HEADER + f"{T0},100,abc,98,100,1\n")
    with pytest.raises(DataError, match="row 2: could not convert"):
        load_bars([bad], "X", 60)
    bad.write_text("when,open,high,low,close\n")
    with pytest.raises(DataError, match="no time column"):
        load_bars([bad], "X", 60)
    with pytest.raises(DataError, match="does not exist"):
        load_bars([tmp_path / "missing.csv"], "X", 60)


def test_cli_json_matches_the_api_and_writes_the_files(tmp_path):
    data = write_csv(tmp_path / "bars.csv")
    _, expected = run(tmp_path, {"0": [["open", {"qty": 10, "stop_loss": 97.0}]]}, commission=0.0005,
                      slippage=0.001)
    out = tmp_path / "out"
    script = json.dumps({"0": [["open", {"qty": 10, "stop_loss": 97.0}]]})
    done = run_cli("backtest", "--strategy", "tests.bt_strategies:ScriptedStrategy", "--data", str(data),
                   "--epic", "X", "--time-frame", "60", "--initial-balance", "10000", "--commission", "0.0005",
                   "--slippage", "0.001", "--param", "epic=\"X\"", "--param", "time_frame=60",
                   "--param", f"script={script}", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["metrics"]["final_equity"] == pytest.approx(expected.metrics["final_equity"])
    assert answer["metrics"]["trades"] == 1 and answer["bars"] == 6 and answer["bars_per_second"] > 0
    assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "trades.csv").read_text().splitlines()
    assert rows[0].startswith("epic,side,qty,entry_time") and rows[1].startswith("X,long,10,2024-01-01T00:01:00Z")
    assert json.loads((out / "results.json").read_text())["metrics"]["trades"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("date,open\n1,2\n")
    done = run_cli("backtest", "--strategy", "maotrade.examples.rsi:RsiReversion", "--data", str(bad),
                   "--epic", "X", "--time-frame", "60", "--out", str(out))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"error: {bad}: no 'high' column"]


def test_report_writes_infinite_ratios_as_strings(tmp_path):
    _, result = run(tmp_path, {"0": [["open", {"qty": 1}]], "1": [["close", {}]]})
    assert result.metrics["profit_factor"] == math.inf  # one winning trade, no loss
    written = write_all(result, tmp_path / "r", chart=False)
    assert json.loads(written["results"].read_text())["metrics"]["profit_factor"] == "inf"


def test_a_request_given_as_a_map_is_typed_as_the_engine_types_it(tmp_path):
    """A strategy host may hand the backtest wire maps instead of structs: a good one trades,
    a malformed one is answered with one error naming the field, and the run goes on."""
    bars = load_bars([write_csv(tmp_path / "bars.csv")], "X", 60)

    class MapStrategy(ScriptedStrategy):
        def on_market_data(self, bar):
            super().on_market_data(bar)
            if self.bar_count == 1:
                self._link.put({"type": "order_open", "v": 1, "epic": "X", "qty": "ten"})
                self._link.put({"type": "order_open", "v": 1, "epic": "X", "qty": 10,
                                "client_order_id": "by-map"})

        def dispatch(self, msg):
            if msg.get("type") == "error":
                self.seen.append(("error", msg["reason"]))
            super().dispatch(msg)

    strategy = MapStrategy({"epic": "X", "time_frame": 60})
    result = Backtest(strategy, bars, BacktestConfig("X", 60, initial_balance=10_000.0)).run()
    [refusal] = [s[1] for s in strategy.seen if s[0] == "error"]
    assert refusal == "order_open: expected `float`, got `str` at `qty`"
    [order] = result.orders
    assert (order.client_order_id, order.status, order.filled_qty) == ("by-map", "FILLED", 10)
