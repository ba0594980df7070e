"""What a backtest leaves behind: the trade list (CSV), the equity and drawdown chart
(PNG, matplotlib), the results as JSON and a summary for people."""
from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from maotrade.backtest.metrics import drawdown_series
from maotrade.backtest.runner import BacktestResult

TRADE_COLUMNS = ["epic", "side", "qty", "entry_time", "entry_price", "exit_time", "exit_price",
                 "pnl", "commission", "net_pnl", "duration_s"]


def _iso(ms) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z") if ms is not None else ""


def write_trades_csv(result: BacktestResult, path: Path) -> Path:
    """Write one row per trade (times in ISO 8601 UTC; the last may still be open)."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRADE_COLUMNS)
        writer.writeheader()
        for trade in result.trades:
            row = trade.to_dict()
            row["entry_time"], row["exit_time"] = _iso(row["entry_time"]), _iso(row["exit_time"])
            writer.writerow({k: row.get(k) for k in TRADE_COLUMNS})
    return path


def write_chart(result: BacktestResult, path: Path) -> Path:
    """Draw equity (top) and drawdown (bottom) against time into a PNG."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the chart needs matplotlib (pip install 'maotrade[backtest]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [datetime.fromtimestamp(d / 1000, timezone.utc) for d in result.dates]
    drawdown = [-100 * d for d in drawdown_series(result.equity)]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6),
                                      gridspec_kw={"height_ratios": [3, 1]})
    try:
        top.plot(times, result.equity, linewidth=1, color="tab:blue")
        top.axhline(result.config.initial_balance, color="grey", linewidth=0.5)
        top.set_ylabel(f"equity ({result.config.currency})")
        top.set_title(f"{result.config.epic} {result.config.time_frame}s: total return "
                      f"{100 * result.metrics['total_return']:.2f}%")
        bottom.fill_between(times, drawdown, 0, color="tab:red", alpha=0.5, linewidth=0)
        bottom.set_ylabel("drawdown (%)")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


def _number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def to_json(result: BacktestResult) -> dict:
    """The results as a JSON-ready dict (infinite ratios as the strings "inf"/"-inf")."""
    return {
        "config": vars(result.config),
        "metrics": {k: _number(v) for k, v in result.metrics.items()},
        "bars": result.bars, "elapsed_s": result.elapsed_s, "bars_per_second": result.bars_per_second,
        "strategy_errors": result.strategy_errors, "warnings": result.warnings,
        "account_info": {k: _number(v) for k, v in result.account_info.items()},
        "trades": [{k: _number(v) for k, v in t.to_dict().items()} for t in result.trades],
    }


def summary_lines(result: BacktestResult) -> list[str]:
    """The figures a person reads after a run."""
    m = result.metrics

    def pct(value):
        if value is None:
            return "n/a"
        if not math.isfinite(value):
            return f"{value}"
        return f"{100 * value:.3e}%" if abs(value) >= 1e4 else f"{100 * value:.2f}%"

    def num(value):
        return "n/a" if value is None else f"{value:.3f}"

    first = _iso(result.dates[0]) if result.dates else "-"
    last = _iso(result.dates[-1]) if result.dates else "-"
    return [
        f"bars            {result.bars} ({first} .. {last}), {result.bars_per_second:,.0f} bars/s",
        f"final equity    {m['final_equity']:,.2f} {result.config.currency} "
        f"(initial {m['initial_balance']:,.2f}, commission {m['commission']:,.2f})",
        f"total return    {pct(m['total_return'])}   annualised {pct(m['annualised_return'])}",
        f"sharpe          {num(m['sharpe'])}   sortino {num(m['sortino'])}",
        f"max drawdown    {pct(m['max_drawdown'])} over {m['max_drawdown_duration_bars']} bars "
        f"({m['max_drawdown_duration_s'] / 3600:.1f} h){'' if m['max_drawdown_recovered'] else ', not recovered'}",
        f"trades          {m['trades']}   win rate {pct(m['win_rate'])}   profit factor {num(m['profit_factor'])}",
        f"exposure        {pct(m['exposure'])}",
    ] + ([f"strategy errors {result.strategy_errors} (see the log)"] if result.strategy_errors else []) + [
        f"warning         {w}" for w in result.warnings]


def write_all(result: BacktestResult, out_dir: Path, chart: bool = True) -> dict[str, Path]:
    """Write trades.csv, results.json and (if ``chart``) equity.png into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"trades": write_trades_csv(result, out_dir / "trades.csv")}
    path = out_dir / "results.json"
    path.write_text(json.dumps(to_json(result), indent=2))
    written["results"] = path
    if chart:
        written["chart"] = write_chart(result, out_dir / "equity.png")
    return written
