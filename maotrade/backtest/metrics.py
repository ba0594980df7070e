"""Performance figures of a backtest (pure functions of plain numbers, hand-checkable).

Conventions: returns are simple per-bar returns of equity, the first measured from the
initial balance; Sharpe and Sortino take a zero risk-free rate and are annualised with
the number of bars per year actually observed (bars / years of calendar time covered,
a year being 365 days); drawdowns are fractions of the running peak, the initial
balance included.

The per-bar series functions take any sequence of numbers and work on numpy arrays (a
year of one-minute bars is half a million points); they return plain Python numbers.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

MS_PER_YEAR = 365 * 86_400 * 1000


def bar_returns(equity: Sequence[float], initial: float) -> np.ndarray:
    """Per-bar simple returns of ``equity``, the first one against ``initial`` (0 after a zero)."""
    values = np.asarray(equity, dtype=float)
    previous = np.concatenate(([float(initial)], values[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(previous != 0, values / np.where(previous != 0, previous, 1.0) - 1, 0.0)


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
    values = np.asarray(returns, dtype=float)
    if len(values) < 2:
        return None
    mean = float(values.mean())
    variance = float(((values - mean) ** 2).sum() / (len(values) - 1))
    if variance <= 1e-300:
        return None
    return mean / math.sqrt(variance) * math.sqrt(periods_per_year)


def sortino(returns: Sequence[float], periods_per_year: float) -> Optional[float]:
    """Mean over downside deviation (root mean square of the negative returns, zero for
    the others, over all periods), times sqrt(periods per year)."""
    values = np.asarray(returns, dtype=float)
    if not len(values):
        return None
    downside = math.sqrt(float((np.minimum(values, 0.0) ** 2).sum()) / len(values))
    if downside <= 0:
        return None
    return float(values.mean()) / downside * math.sqrt(periods_per_year)


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
    values = np.asarray(curve, dtype=float)
    if not len(values):
        return []
    peak = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, 1 - values / np.where(peak > 0, peak, 1.0), 0.0).tolist()


def max_drawdown(curve: Sequence[float]) -> Drawdown:
    """The deepest drawdown of ``curve`` and its duration from peak to recovery."""
    values = np.asarray(curve, dtype=float)
    if not len(values):
        return Drawdown()
    peaks = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        depths = np.where(peaks > 0, 1 - values / np.where(peaks > 0, peaks, 1.0), 0.0)
    trough = int(depths.argmax())  # the first deepest point
    depth = float(depths[trough])
    if depth <= 0:
        return Drawdown()
    peak = int((values[:trough + 1] == peaks[trough]).argmax())  # where that peak was first reached
    later = np.nonzero(values[trough + 1:] >= values[peak])[0]
    recovery = int(later[0]) + trough + 1 if len(later) else None
    duration = (recovery if recovery is not None else len(values) - 1) - peak
    return Drawdown(depth=depth, peak=peak, trough=trough, recovery=recovery, duration=duration)


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
        "exposure": float(np.count_nonzero(exposed)) / len(exposed) if len(exposed) else 0.0,
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
