"""The search: optuna proposes parameter sets (grid or TPE), an executor backtests them.

Trials are asked and told in batches of a fixed size, in trial-number order, whatever
runs them: the same study on one process or on twenty Dask workers proposes the same
parameters and finds the same best set. A trial counts only with at least
``min_trades`` closed trades in sample; the objective is the mean of one metric over the
walk-forward windows' in-sample parts. Out-of-sample figures are recorded beside it and
never optimised on.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from maotrade.errors import MAOTradeError
from maotrade.optimize.evaluate import MINIMISED, Context, TrialResult
from maotrade.optimize.space import Range, SpaceError, grid

log = logging.getLogger(__name__)

SAMPLERS = ("grid", "tpe")
MAX_GRID = 20_000
DEFAULT_BATCH = 32


class OptimizeError(MAOTradeError, ValueError):
    """An optimisation cannot run as asked."""


@dataclass
class StudySettings:
    """How to search."""

    sampler: str = "tpe"
    trials: int = 100  # TPE: trials to run; grid: at most this many points, else refused
    metric: str = "sharpe"
    min_trades: int = 1
    seed: int = 0
    batch: int = DEFAULT_BATCH

    @property
    def maximise(self) -> bool:
        """True unless the metric is one where smaller is better (drawdowns)."""
        return self.metric not in MINIMISED


@dataclass
class StudyResult:
    """Every trial, the best one, the walk-forward view and the parameters' importance."""

    settings: StudySettings
    trials: list[TrialResult]
    best: Optional[TrialResult]
    importance: dict = field(default_factory=dict)
    walk_forward: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    executor: str = ""

    @property
    def backtests(self) -> int:
        """Backtests run (in and out of sample, every window)."""
        return sum(t.backtests for t in self.trials)

    @property
    def backtests_per_second(self) -> float:
        """Throughput of the whole study."""
        return self.backtests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def score(self, trial: TrialResult) -> Optional[float]:
        """The objective of ``trial``, or None if it does not count (error, too few trades)."""
        return _score(trial, self.settings)


def _score(trial: TrialResult, settings: StudySettings) -> Optional[float]:
    if trial.error or trial.trades() < settings.min_trades:
        return None
    return trial.value(settings.metric)


def _better(a: float, b: float, maximise: bool) -> bool:
    return a > b if maximise else a < b


def best_trial(trials: list[TrialResult], settings: StudySettings,
               key: Callable[[TrialResult], Optional[float]] = None) -> Optional[TrialResult]:
    """The counting trial with the best objective; a tie goes to the lower trial number."""
    key = key or (lambda t: _score(t, settings))
    best, best_value = None, None
    for trial in sorted(trials, key=lambda t: t.number):
        value = key(trial)
        if value is not None and (best_value is None or _better(value, best_value, settings.maximise)):
            best, best_value = trial, value
    return best


def run_study(context: Context, space: dict[str, Range], settings: StudySettings, executor,
              progress: Optional[Callable[[int], None]] = None) -> StudyResult:
    """Search ``space``; ``executor`` runs the trials; ``progress(n)`` after each batch."""
    try:
        import optuna
    except ImportError:
        raise OptimizeError("optimising needs optuna (pip install 'maotrade[optimize]')") from None

    if settings.sampler not in SAMPLERS:
        raise SpaceError(f"unknown sampler {settings.sampler!r} (one of {', '.join(SAMPLERS)})")
    if settings.batch < 1 or settings.trials < 1:
        raise SpaceError("--trials and --batch must be at least 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {name: spec.distribution() for name, spec in space.items()}
    direction = "maximize" if settings.maximise else "minimize"
    started = time.perf_counter()
    executor.start(context)
    trials: list[TrialResult] = []
    if settings.sampler == "grid":
        points = grid(space)
        if len(points) > min(MAX_GRID, settings.trials):
            raise SpaceError(f"the grid has {len(points)} points, more than --trials {settings.trials}"
                             f"{' (and the limit of ' + str(MAX_GRID) + ')' if len(points) > MAX_GRID else ''}: "
                             f"raise --trials, narrow the space, or use --sampler tpe")
        study = optuna.create_study(direction=direction)
        for offset in range(0, len(points), settings.batch):
            batch = list(enumerate(points[offset:offset + settings.batch], start=offset))
            results = executor.run(batch)
            for result in results:
                _record(study, result, distributions, settings)
            trials.extend(results)
            if progress is not None:
                progress(len(batch))
    else:
        sampler = optuna.samplers.TPESampler(seed=settings.seed)
        study = optuna.create_study(direction=direction, sampler=sampler)
        seen: dict[str, TrialResult] = {}
        while len(trials) < settings.trials:
            asked = [study.ask(distributions) for _ in range(min(settings.batch, settings.trials - len(trials)))]
            fresh = []
            for trial in asked:
                if _key(trial.params) not in seen:
                    fresh.append((trial.number, dict(trial.params)))
                    seen[_key(trial.params)] = None
            for result in executor.run(fresh):
                seen[_key(result.params)] = result
            for trial in asked:
                # A repeated proposal is told the result already known, not run again.
                known = seen[_key(trial.params)]
                result = known if known.number == trial.number else TrialResult(
                    number=trial.number, params=known.params, in_sample=known.in_sample,
                    out_of_sample=known.out_of_sample, error=known.error)
                value = _score(result, settings)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, value)
                trials.append(result)
            if progress is not None:
                progress(len(asked))
    elapsed = time.perf_counter() - started
    result = StudyResult(settings=settings, trials=trials, best=best_trial(trials, settings),
                         elapsed_s=elapsed, executor=getattr(executor, "description", ""))
    result.importance = _importance(study)
    result.walk_forward = walk_forward_view(trials, settings, len(context.windows))
    return result


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def _record(study, result: TrialResult, distributions: dict, settings: StudySettings) -> None:
    import optuna

    value = _score(result, settings)
    state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.PRUNED
    study.add_trial(optuna.trial.create_trial(params=result.params, distributions=distributions,
                                              value=value, state=state))


def _importance(study) -> dict:
    """How much each parameter moves the objective (PED-ANOVA: no extra dependency)."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 4:
        return {}
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too little variation to tell
        log.info("event=importance_unavailable reason=%s", exc)
        return {}


def walk_forward_view(trials: list[TrialResult], settings: StudySettings, windows: int) -> list[dict]:
    """Per window: the parameters best in sample there, and how they did out of sample."""
    out = []
    for index in range(windows):
        def in_window(trial: TrialResult, index=index) -> Optional[float]:
            if trial.error or len(trial.in_sample) <= index:
                return None
            metrics = trial.in_sample[index]
            if int(metrics.get("trades") or 0) < max(1, settings.min_trades // max(windows, 1)):
                return None
            return metrics.get(settings.metric)
        chosen = best_trial(trials, settings, key=in_window)
        if chosen is None:
            out.append({"window": index, "params": None, "in_sample": None, "out_of_sample": None})
            continue
        out.append({"window": index, "params": chosen.params,
                    "in_sample": chosen.in_sample[index].get(settings.metric),
                    "out_of_sample": chosen.out_of_sample[index].get(settings.metric),
                    "out_of_sample_trades": chosen.out_of_sample[index].get("trades")})
    return out
