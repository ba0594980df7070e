"""Parameter optimisation: search a strategy's ``param_space`` with optuna over backtests.

``space`` declares ranges (``IntRange``, ``FloatRange``, ``Choice``), ``splits`` cuts the
data into walk-forward windows, ``evaluate`` runs one trial's backtests (the one place
that calls the backtest runner), ``executors`` runs trials here or on Dask distributed,
``study`` drives optuna (grid or TPE), ``report`` writes the results.
"""
from maotrade.optimize.space import Choice, FloatRange, IntRange, SpaceError, grid, space_of

__all__ = ["Choice", "FloatRange", "IntRange", "SpaceError", "grid", "space_of"]
