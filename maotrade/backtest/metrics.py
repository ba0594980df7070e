"""Performance figures of a backtest (pure functions of plain numbers, hand-checkable).

Conventions: returns are simple per-bar returns of equity, the first measured from the
initial balance; Sharpe and Sortino take a zero risk-free rate and are annualised with
the number of bars per year actually observed (bars / years of calendar time covered,
a year being 365 days); drawdowns are fractions of the running peak, the initial
balance included.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

MS_PER_YEAR = 365 * 86_400 * 1000


def bar_returns(equity: Sequence[float], initial: float) -> list[float]:
    """Per-bar simple returns of ``equity``, the first one against ``initial``."""
    out, previous = [], initial
    for value in equity:
        out.append(value / previous - 1 if previous else 0.0)
        previous = value
    return out


def annualised_return(total_return: float, years: float) -> Optional[float]:
    """Compound annual growth rate of ``total_return`` earned over ``years``."""
    if years <= 0 or total_return <= -1:
        return None if years <= 0 else -1.0
    try:
        return (1 + total_return) ** (1 / years) - 1
    except OverflowError:  # a gain compounded over a sliver of a year
        return math.inf


def sharpe(returns: Sequence[float], periods_per_year: float) -> Optional[float]:
    """Mean over sample standard deviation of ``returns``, times sqrt(periods per year)."""
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    if variance <= 0:
        return None
    return mean / math.sqrt(variance) * math.sqrt(periods_per_year)


def sortino(returns: Sequence[float], periods_per_year: float) -> Optional[float]:
    """Mean over downside deviation (root mean square of the negative returns, zero for
    the others, over all periods), times sqrt(periods per year)."""
    if not returns:
        return None
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    if downside <= 0:
        return None
    return sum(returns) / len(returns) / downside * math.sqrt(periods_per_year)


@dataclass
class Drawdown:
    """The deepest fall from a peak: its depth (fraction) and where it started and ended.

    Indexes count points of the curve given to ``max_drawdown``; ``recovery`` is None when
    the peak was never regained, and ``duration`` (points from peak to recovery, or to the
    end) then runs to the last point.
    """

    depth: float = 0.0
    peak: int = 0
    trough: int = 0
    recovery: Optional[int] = None
    duration: int = 0


def drawdown_series(curve: Sequence[float]) -> list[float]:
    """Drawdown (fraction below the running peak, >= 0) at every point of ``curve``."""
    out, peak = [], -math.inf
    for value in curve:
        peak = max(peak, value)
        out.append(1 - value / peak if peak > 0 else 0.0)
    return out


def max_drawdown(curve: Sequence[float]) -> Drawdown:
    """The deepest drawdown of ``curve`` and its duration from peak to recovery."""
    best = Drawdown()
    peak_index, peak = 0, -math.inf
    for index, value in enumerate(curve):
        if value > peak:
            peak_index, peak = index, value
        depth = 1 - value / peak if peak > 0 else 0.0
        if depth > best.depth:
            best = Drawdown(depth=depth, peak=peak_index, trough=index)
    if best.depth > 0:
        level = curve[best.peak]
        best.recovery = next((i for i in range(best.trough + 1, len(curve)) if curve[i] >= level), None)
        best.duration = (best.recovery if best.recovery is not None else len(curve) - 1) - best.peak
    return best


def win_rate(pnls: Sequence[float]) -> Optional[float]:
    """Fraction of trades with a positive net P&L."""
    return sum(1 for p in pnls if p > 0) / len(pnls) if pnls else None


def profit_factor(pnls: Sequence[float]) -> Optional[float]:
    """Gross profit over gross loss of the trades (inf when nothing was lost)."""
    gain = sum(p for p in pnls if p > 0)
    loss = -sum(p for p in pnls if p < 0)
    if loss == 0:
        return math.inf if gain > 0 else None
    return gain / loss


def summarize(equity: Sequence[float], initial: float, first_date: int, last_date: int,
              time_frame: int, trade_pnls: Sequence[float], exposed: Sequence[bool]) -> dict:
    """Every figure of a run: ``equity`` at each bar's close, bar dates (ms) of the first
    and last bar, the net P&L of each closed trade, and whether a position was held at
    each bar's close."""
    final = equity[-1] if equity else initial
    total = final / initial - 1
    years = (last_date - first_date + int(time_frame) * 1000) / MS_PER_YEAR if equity else 0.0
    returns = bar_returns(equity, initial)
    per_year = len(returns) / years if years > 0 else 0.0
    drawdown = max_drawdown([initial, *equity])
    return {
        "initial_balance": initial, "final_equity": final, "total_return": total,
        "annualised_return": annualised_return(total, years), "years": years,
        "sharpe": sharpe(returns, per_year), "sortino": sortino(returns, per_year),
        "max_drawdown": drawdown.depth,
        "max_drawdown_duration_bars": drawdown.duration,
        "max_drawdown_duration_s": drawdown.duration * int(time_frame),
        "max_drawdown_recovered": drawdown.recovery is not None or drawdown.depth == 0,
        "trades": len(trade_pnls), "win_rate": win_rate(trade_pnls),
        "profit_factor": profit_factor(trade_pnls),
        "exposure": sum(1 for e in exposed if e) / len(exposed) if exposed else 0.0,
    }


def drawdown_dict(drawdown: Drawdown) -> dict:
    """A ``Drawdown`` as a plain dict."""
    return asdict(drawdown)


def buy_and_hold_return(bars: Sequence[dict]) -> Optional[float]:
    """Return of buying at the first bar's open and holding to the last bar's close."""
    if not bars:
        return None
    return bars[-1]["close"] / bars[0]["open"] - 1


def instrument_figures(trades: Sequence, bars: Sequence[dict]) -> dict:
    """Figures of one instrument: its closed trades' count, net P&L, win rate, profit
    factor, commission, exits by reason, and the buy-and-hold return over its bars."""
    closed = [t for t in trades if t.is_closed]
    pnls = [t.net_pnl for t in closed]
    reasons: dict[str, int] = {}
    for trade in closed:
        reasons[trade.exit_reason] = reasons.get(trade.exit_reason, 0) + 1
    return {"bars": len(bars), "trades": len(closed), "net_pnl": sum(pnls),
            "commission": sum(t.commission for t in trades), "win_rate": win_rate(pnls),
            "profit_factor": profit_factor(pnls), "exits": reasons,
            "buy_and_hold_return": buy_and_hold_return(bars)}
