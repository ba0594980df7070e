"""The HTML report of a backtest: one self-contained page that works offline.

Per instrument, a price chart (candles; long runs are shown at a coarser bar so the page
stays light) with every entry and exit marked, then equity and drawdown, then the
figures, per-instrument figures and the trade list as tables. Charts are plotly's, with
plotly.js embedded in the page (no network needed to open it).
"""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path

from maotrade.backtest.metrics import drawdown_series

MAX_CANDLES = 4000  # per chart; beyond this, bars are merged for display only
MAX_TRADE_ROWS = 500


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def display_bars(bars: list[dict], limit: int = MAX_CANDLES) -> list[dict]:
    """``bars``, merged ``ceil(len / limit)`` at a time so at most ``limit`` remain."""
    step = max(1, math.ceil(len(bars) / limit))
    if step == 1:
        return list(bars)
    out = []
    for start in range(0, len(bars), step):
        chunk = bars[start:start + step]
        out.append({"date": chunk[0]["date"], "open": chunk[0]["open"], "close": chunk[-1]["close"],
                    "high": max(b["high"] for b in chunk), "low": min(b["low"] for b in chunk)})
    return out


def price_figure(epic: str, bars: list[dict], trades: list):
    """Candles of ``epic`` with entries (triangles up for long, down for short) and exits."""
    import plotly.graph_objects as go

    shown = display_bars(bars)
    fig = go.Figure(go.Candlestick(x=[_time(b["date"]) for b in shown], open=[b["open"] for b in shown],
                                   high=[b["high"] for b in shown], low=[b["low"] for b in shown],
                                   close=[b["close"] for b in shown], name=epic))
    entries = [t for t in trades if t.epic == epic]
    exits = [t for t in entries if t.is_closed]
    fig.add_trace(go.Scatter(
        x=[_time(t.entry_time) for t in entries], y=[t.entry_price for t in entries], mode="markers",
        name="entry", marker={"symbol": ["triangle-up" if t.side == "long" else "triangle-down" for t in entries],
                              "size": 10, "color": "#1f77b4"},
        text=[f"{t.side} {t.qty:g}" for t in entries], hovertemplate="%{text} @ %{y}<extra>entry</extra>"))
    fig.add_trace(go.Scatter(
        x=[_time(t.exit_time) for t in exits], y=[t.exit_price for t in exits], mode="markers", name="exit",
        marker={"symbol": "x", "size": 9, "color": ["#2ca02c" if t.net_pnl > 0 else "#d62728" for t in exits]},
        text=[f"{t.exit_reason}, net {t.net_pnl:,.2f}" for t in exits],
        hovertemplate="%{text} @ %{y}<extra>exit</extra>"))
    note = f" (shown at {len(bars) // len(shown)}-bar candles)" if len(shown) < len(bars) else ""
    fig.update_layout(title=f"{epic}: price, entries and exits{note}", xaxis_rangeslider_visible=False,
                      height=480, margin={"l": 50, "r": 20, "t": 50, "b": 30})
    return fig


def equity_figure(result):
    """Equity (top) and drawdown in percent (bottom) against time."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    times = [_time(d) for d in result.dates]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=times, y=result.equity, name="equity", line={"width": 1}), row=1, col=1)
    fig.add_trace(go.Scatter(x=times, y=[-100 * d for d in drawdown_series(result.equity)], name="drawdown %",
                             fill="tozeroy", line={"width": 0.5, "color": "#d62728"}), row=2, col=1)
    fig.update_yaxes(title_text=f"equity ({result.config.currency})", row=1, col=1)
    fig.update_yaxes(title_text="drawdown (%)", row=2, col=1)
    fig.update_layout(title="Equity and drawdown", height=520, margin={"l": 60, "r": 20, "t": 50, "b": 30})
    return fig


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
td,th{border:1px solid #ccc;padding:0.2em 0.6em;text-align:right}th{background:#f3f3f3}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}"""


def write_html(result, path: Path, title: str = "") -> Path:
    """Write the report page to ``path`` (plotly.js inlined once: it opens offline)."""
    from maotrade.backtest.report import summary_lines  # the same words as the console

    figures = [price_figure(epic, bars, result.trades) for epic, bars in result.data.items()]
    figures.append(equity_figure(result))
    charts = [fig.to_html(full_html=False, include_plotlyjs=(index == 0))
              for index, fig in enumerate(figures)]
    instruments = [[epic, *(_cell(v.get(k)) for k in ("bars", "trades", "net_pnl", "win_rate", "profit_factor",
                                                      "commission", "exits", "buy_and_hold_return"))]
                   for epic, v in result.instruments.items()]
    trades = [[t.epic, t.side, f"{t.qty:g}", _iso(t.entry_time), f"{t.entry_price:.6g}", _iso(t.exit_time),
               "" if t.exit_price is None else f"{t.exit_price:.6g}", t.exit_reason, f"{t.net_pnl:,.2f}"]
              for t in result.trades[:MAX_TRADE_ROWS]]
    more = (f"<p>first {MAX_TRADE_ROWS} of {len(result.trades)} trades; all of them are in trades.csv</p>"
            if len(result.trades) > MAX_TRADE_ROWS else "")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title or 'Backtest report')}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title or 'Backtest report')}</h1>
<pre>{html.escape(chr(10).join(summary_lines(result)))}</pre>
{''.join(charts)}
<h2>Per instrument</h2>
{_table(["instrument", "bars", "trades", "net P&L", "win rate", "profit factor", "commission", "exits",
         "buy and hold return"], instruments)}
<h2>Trades</h2>
{_table(["instrument", "side", "qty", "entry", "entry price", "exit", "exit price", "exit reason", "net P&L"],
        trades)}{more}
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)


def _iso(ms) -> str:
    return "" if ms is None else _time(ms).strftime("%Y-%m-%d %H:%M:%S")
