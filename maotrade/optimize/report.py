"""What an optimisation leaves behind: the trials table, the importance plot, the JSON record
and the best parameters' full backtest report."""
from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from maotrade.optimize.evaluate import Context, write_backtest_report
from maotrade.optimize.study import StudyResult


def _number(value) -> Optional[float]:
    return round(value, 6) if isinstance(value, (int, float)) and math.isfinite(value) else None


def trial_rows(result: StudyResult) -> list[dict]:
    """One row per trial, best first: parameters, objective in and out of sample, trades."""
    metric = result.settings.metric
    rows = []
    for trial in result.trials:
        score = result.score(trial)
        rows.append({"trial": trial.number, **trial.params,
                     f"{metric}_in_sample": _number(trial.value(metric)),
                     f"{metric}_out_of_sample": _number(trial.value(metric, "out_of_sample")),
                     "trades_in_sample": trial.trades(), "trades_out_of_sample": trial.trades("out_of_sample"),
                     "counted": score is not None, "error": trial.error})
    sign = -1 if result.settings.maximise else 1
    rows.sort(key=lambda r: (not r["counted"], sign * (r[f"{metric}_in_sample"] or 0.0), r["trial"]))
    return rows


def table_lines(result: StudyResult, limit: int = 15) -> list[str]:
    """The best trials as a text table."""
    rows = [r for r in trial_rows(result) if r["counted"]][:limit]
    if not rows:
        return ["no trial counted (each had an error or too few trades in sample)"]
    names = list(result.trials[0].params)
    metric = result.settings.metric
    header = ["trial", *names, f"{metric} IS", f"{metric} OOS", "trades IS", "trades OOS"]
    body = [[str(r["trial"]), *(f"{r[n]:g}" if isinstance(r[n], float) else str(r[n]) for n in names),
             _fmt(r[f"{metric}_in_sample"]), _fmt(r[f"{metric}_out_of_sample"]),
             str(r["trades_in_sample"]), str(r["trades_out_of_sample"])] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    return ["  ".join(h.rjust(w) for h, w in zip(header, widths))] + \
           ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in body]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_all(result: StudyResult, context: Context, out_dir, chart: bool = True) -> dict:
    """Write trials.csv, optimize.json, importance.png and best/ (the best run's report)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    rows = trial_rows(result)
    names = list(rows[0]) if rows else ["trial"]
    extra = sorted({k for r in rows for k in r} - set(names))
    with (out / "trials.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names + extra)
        writer.writeheader()
        writer.writerows(rows)
    written["trials"] = out / "trials.csv"
    record = {"ran_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
              "strategy": f"{context.strategy_class.__module__}:{context.strategy_class.__qualname__}",
              "epic": context.epic, "time_frame": context.time_frame, "fixed_params": context.fixed_params,
              "bars": len(context.bars), "windows": [vars(w) for w in context.windows],
              "settings": vars(result.settings), "executor": result.executor,
              "elapsed_s": round(result.elapsed_s, 3), "backtests": result.backtests,
              "backtests_per_second": round(result.backtests_per_second, 2),
              "best": None if result.best is None else {
                  "trial": result.best.number, "params": result.best.params,
                  "in_sample": _number(result.best.value(result.settings.metric)),
                  "out_of_sample": _number(result.best.value(result.settings.metric, "out_of_sample"))},
              "importance": result.importance, "walk_forward": result.walk_forward}
    (out / "optimize.json").write_text(json.dumps(record, indent=2, default=str))
    written["json"] = out / "optimize.json"
    if chart and result.importance:
        written["importance"] = _importance_plot(result.importance, out / "importance.png", result.settings.metric)
    if result.best is not None:
        for name, path in write_backtest_report(context, result.best.params, out / "best", chart).items():
            written[f"best_{name}"] = path
    return written


def _importance_plot(importance: dict, path: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importance)[::-1]
    figure, axes = plt.subplots(figsize=(6, 0.5 * len(names) + 1.2))
    axes.barh(names, [importance[n] for n in names], color="#3465a4")
    axes.set_xlabel(f"importance for {metric} (PED-ANOVA)")
    axes.set_title("Parameter importance")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
