"""Backtesting: run a ``Strategy`` unchanged on historical bars, in one process.

``load_bars`` reads OHLCV files (CSV, Parquet), ``Backtest`` replays them through the
strategy API with the paper broker's bar matching (``maotrade.matching``), ``metrics``
computes the figures, ``report`` writes the trade list, the charts and JSON.
``run_backtest(strategy_class, params, data, config)`` is the one-call entry for scripts
and the optimiser.
"""
from maotrade.backtest.data import DataError, load_bars, sample_files
from maotrade.backtest.runner import (Backtest, BacktestConfig, BacktestResult, Prepared, StrategyFailed, prepare,
                                      run_backtest)

__all__ = ["Backtest", "BacktestConfig", "BacktestResult", "DataError", "Prepared", "StrategyFailed", "load_bars",
           "prepare", "run_backtest", "sample_files"]
