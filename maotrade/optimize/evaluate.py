"""One trial: a parameter set backtested on every walk-forward window, in and out of sample.

This module runs on Dask workers as well as in the optimiser's own process. A trial
never raises: whatever goes wrong (a strategy refusing its parameters, a crash) comes
back as the trial's ``error``.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

from maotrade.optimize.splits import Window

log = logging.getLogger(__name__)

# Metrics where smaller is better; every other metric is maximised.
MINIMISED = frozenset({"max_drawdown", "max_drawdown_duration_bars", "max_drawdown_duration_s"})


@dataclass
class Context:
    """What every trial of one study shares: shipped to each worker once."""

    strategy_class: type
    fixed_params: dict
    bars: list[dict]
    windows: list[Window]
    epic: str
    time_frame: int
    initial_balance: float = 100_000.0
    commission: float = 0.0
    slippage: float = 0.0
    metric: str = "sharpe"

    def window_bars(self, start: int, end: int):
        """``bars[start:end]`` prepared for replay, made once per process for all its trials."""
        cache = self.__dict__.setdefault("_prepared", {})
        prepared = cache.get((start, end))
        if prepared is None:
            from maotrade.backtest import prepare

            prepared = cache[(start, end)] = prepare(self.bars[start:end], self.epic)
        return prepared

    def __getstate__(self) -> dict:
        # What is prepared here stays here: workers prepare their own.
        state = dict(self.__dict__)
        state.pop("_prepared", None)
        return state


@dataclass
class TrialResult:
    """Metrics of one parameter set on every window."""

    number: int
    params: dict
    in_sample: list[dict] = field(default_factory=list)  # metrics per window
    out_of_sample: list[dict] = field(default_factory=list)
    error: str = ""
    backtests: int = 0
    worker: str = ""  # host:pid of the process that ran it
    cpu_s: float = 0.0  # CPU seconds its process spent on it (all threads: a worker's own included)

    def value(self, metric: str, part: str = "in_sample") -> Optional[float]:
        """Mean of ``metric`` over the windows (None if any window lacks it)."""
        values = [m.get(metric) for m in getattr(self, part)]
        if not values or any(v is None or not math.isfinite(v) for v in values):
            return None
        return sum(values) / len(values)

    def trades(self, part: str = "in_sample") -> int:
        """Closed trades summed over the windows."""
        return sum(int(m.get("trades") or 0) for m in getattr(self, part))


def run_backtest(context: Context, params: dict, bars):
    """Run one backtest of ``params`` on ``bars`` (a list, or prepared); return the runner's result.

    With ``write_backtest_report`` below, the only use of the backtest runner in the
    optimiser: if its signature changes, these are the places to follow it.
    """
    from maotrade.backtest import Backtest, BacktestConfig

    config = BacktestConfig(epic=context.epic, time_frame=context.time_frame,
                            initial_balance=context.initial_balance, commission=context.commission,
                            slippage=context.slippage)
    strategy = context.strategy_class({"epic": context.epic, "time_frame": context.time_frame,
                                       **context.fixed_params, **params})
    return Backtest(strategy, bars, config).run()


def write_backtest_report(context: Context, params: dict, out_dir, chart: bool) -> dict:
    """Backtest ``params`` on all of the study's bars and write the backtest's own report there."""
    from maotrade.backtest.report import write_all

    return write_all(run_backtest(context, params, context.bars), out_dir, chart=chart)


def evaluate(number: int, params: dict, context: Context) -> TrialResult:
    """Backtest ``params`` in and out of sample on every window of ``context``."""
    started = time.process_time()
    result = TrialResult(number=number, params=dict(params), worker=f"{socket.gethostname()}:{os.getpid()}")
    try:
        _evaluate_windows(result, params, context)
    finally:
        result.cpu_s = time.process_time() - started
    return result


def _evaluate_windows(result: TrialResult, params: dict, context: Context) -> None:
    # The strategy's own log lines would repeat for every backtest of a sweep.
    logging.getLogger("maotrade.backtest").setLevel(logging.CRITICAL)
    try:
        for window in context.windows:
            for part, start, end in (("in_sample", window.start, window.split),
                                     ("out_of_sample", window.split, window.end)):
                run = run_backtest(context, params, context.window_bars(start, end))
                result.backtests += 1
                if run.strategy_errors:
                    result.error = f"the strategy raised {run.strategy_errors} time(s) with these parameters"
                    return
                getattr(result, part).append(run.metrics)
    except Exception as exc:  # a trial reports its failure; it never ends the study
        result.error = f"{type(exc).__name__}: {exc}"
        log.debug("event=trial_failed number=%d\n%s", result.number, traceback.format_exc())
