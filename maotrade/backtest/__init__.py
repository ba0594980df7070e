"""Backtesting: run a ``Strategy`` unchanged on historical bars, in one process.

``load_bars`` reads OHLCV files (CSV, Parquet), ``Backtest`` replays them through the
strategy API with the paper broker's bar matching (``maotrade.matching``), ``metrics``
computes the figures, ``report`` writes the trade list, the chart and JSON.
"""
from maotrade.backtest.data import DataError, load_bars
from maotrade.backtest.runner import Backtest, BacktestConfig, BacktestResult

__all__ = ["Backtest", "BacktestConfig", "BacktestResult", "DataError", "load_bars"]
