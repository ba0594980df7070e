"""What a backtest leaves behind: the trade list (CSV), the equity and drawdown chart
(PNG, matplotlib), the HTML report (``maotrade.backtest.html``), the results as JSON and
a summary for people.

results.json holds what is needed to run the same backtest again: the strategy, its
parameters, the settings, every data file with its SHA-256, the MAOTrade version and the
command line (``run_info``, given by the caller).
"""
from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from maotrade.backtest.metrics import drawdown_series
from maotrade.backtest.runner import BacktestResult

TRADE_COLUMNS = ["epic", "side", "qty", "entry_time", "entry_price", "exit_time", "exit_price",
                 "exit_reason", "pnl", "commission", "net_pnl", "duration_s"]
PRICE_COLUMNS = ("entry_price", "exit_price")
MONEY_COLUMNS = ("pnl", "commission", "net_pnl")
PRICE_DIGITS = 10  # significant digits of a price: exact for any quote a broker sends
MONEY_DECIMALS = 4  # P&L and commission to 1/100 of a cent


def _iso(ms) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z") if ms is not None else ""


def trade_row(trade) -> dict:
    """One trade as its CSV row: ISO times, prices to 10 significant digits, money to 4
    decimals, quantity and duration as short as exact."""
    row = trade.to_dict()
    row["entry_time"], row["exit_time"] = _iso(row["entry_time"]), _iso(row["exit_time"])
    for name in PRICE_COLUMNS:
        if row[name] is not None:
            row[name] = f"{row[name]:.{PRICE_DIGITS}g}"
    for name in MONEY_COLUMNS:
        row[name] = f"{round(row[name], MONEY_DECIMALS) + 0.0:.{MONEY_DECIMALS}f}"
    row["qty"] = f"{row['qty']:g}"
    if row["duration_s"] is not None:
        row["duration_s"] = f"{row['duration_s']:g}"
    return {k: row.get(k) for k in TRADE_COLUMNS}


def write_trades_csv(result: BacktestResult, path: Path) -> Path:
    """Write one row per trade (times in ISO 8601 UTC; a trade still open when the data
    ended is valued at the last close, exit reason ``end``)."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRADE_COLUMNS)
        writer.writeheader()
        for trade in result.trades:
            writer.writerow(trade_row(trade))
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
        top.set_title(f"{', '.join(result.data) or result.config.epic}: total return "
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


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return _number(value)


def to_json(result: BacktestResult, run_info: dict | None = None) -> dict:
    """The results as a JSON-ready dict (infinite ratios as the strings "inf"/"-inf");
    ``run_info`` (strategy, params, data files with hashes, version, command) first."""
    return {
        **(run_info or {}),
        "config": vars(result.config),
        "instruments": _clean(result.instruments),
        "strategy_error_counts": result.error_counts,
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
    lines = [
        f"bars            {result.bars} ({first} .. {last}), {result.bars_per_second:,.0f} bars/s",
        f"final equity    {m['final_equity']:,.2f} {result.config.currency} "
        f"(initial {m['initial_balance']:,.2f}, commission {m['commission']:,.2f})",
        f"total return    {pct(m['total_return'])}   annualised {pct(m['annualised_return'])}",
        f"sharpe          {num(m['sharpe'])}   sortino {num(m['sortino'])}",
        f"max drawdown    {pct(m['max_drawdown'])} over {m['max_drawdown_duration_bars']} bars "
        f"({m['max_drawdown_duration_s'] / 3600:.1f} h){'' if m['max_drawdown_recovered'] else ', not recovered'}",
        f"trades          {m['trades']}   win rate {pct(m['win_rate'])}   profit factor {num(m['profit_factor'])}",
        f"exposure        {pct(m['exposure'])}   buy and hold {pct(m.get('buy_and_hold_return'))}",
    ]
    if len(result.instruments) > 1 or any(i["exits"] for i in result.instruments.values()):
        for epic, figures in result.instruments.items():
            exits = ", ".join(f"{reason} {n}" for reason, n in sorted(figures["exits"].items())) or "none"
            lines.append(f"  {epic:<12}  trades {figures['trades']}  net P&L {figures['net_pnl']:,.2f}  "
                         f"exits: {exits}  buy and hold {pct(figures['buy_and_hold_return'])}")
    if result.strategy_errors:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(result.error_counts.items()))
        lines.append(f"strategy errors {result.strategy_errors} ({kinds})")
    return lines + [f"warning         {w}" for w in result.warnings]


def write_all(result: BacktestResult, out_dir: Path, chart: bool = True, run_info: dict | None = None,
              html_report: bool = True) -> dict[str, Path]:
    """Write trades.csv, results.json and (if ``chart``) equity.png and (if
    ``html_report``) report.html into ``out_dir``."""
    from maotrade.backtest.html import write_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"trades": write_trades_csv(result, out_dir / "trades.csv")}
    path = out_dir / "results.json"
    path.write_text(json.dumps(to_json(result, run_info), indent=2))
    written["results"] = path
    if chart:
        written["chart"] = write_chart(result, out_dir / "equity.png")
    if html_report:
        title = (run_info or {}).get("strategy", {}).get("target", "") if run_info else ""
        written["report"] = write_html(result, out_dir / "report.html", title=f"Backtest {title}".strip())
    return written
