"""What ``maotrade backtest`` does, apart from parsing its options: a run described as
a plain dict (the *spec*), so that results.json can record it and ``--rerun`` can run it
again exactly.

A spec: ``strategy`` (target), ``strategy_path`` (list), ``data`` (list of ``{epic,
path}`` for files, ``{epic, store, account}`` for the history store), ``timerange``,
``time_frame``, ``params``, and the ``BacktestConfig`` settings (``initial_balance``,
``commission``, ``slippage``, ``account``, ``keep_going``).
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from maotrade import __version__
from maotrade.backtest.data import DataError, file_digest, load_bars, sample_files
from maotrade.backtest.runner import Backtest, BacktestConfig, BacktestResult, StrategyFailed
from maotrade.backtest.store import load_stored_bars, parse_timerange, select_timerange
from maotrade.errors import MAOTradeError
from maotrade.strategy_loader import load_strategy, resolve_target

PROGRESS_MIN_BARS = 50_000
CONFIG_KEYS = ("initial_balance", "commission", "slippage", "account", "keep_going")
#: exceptions that, raised while a strategy reads its parameters, mean the parameters are bad.
PARAMETER_ERRORS = (ValueError, TypeError)


class BadParameters(MAOTradeError, ValueError):
    """The strategy refused its parameters (a ``ValueError``/``TypeError`` at start)."""


def data_sources(items: list[str], default_epic: Optional[str], sample: bool, history_root=None,
                 history_account: Optional[str] = None) -> list[dict]:
    """``--data [EPIC=]FILE`` items (and the sample files) as ``{epic, path}`` entries; with
    neither, ``default_epic`` from the history store under ``history_root``."""
    sources = []
    for item in items:
        epic, sep, path = item.partition("=")
        if not sep or "/" in epic or epic.endswith((".csv", ".gz", ".parquet", ".pq")):
            epic, path = default_epic or "", item
        if not epic:
            raise DataError(f"--data {item}: which instrument is it? Give --epic, or write it as EPIC={item}")
        sources.append({"epic": epic, "path": str(Path(path).resolve())})
    if sample:
        shipped = sample_files()
        chosen = [default_epic] if default_epic else list(shipped)
        for epic in chosen:
            if epic not in shipped:
                raise DataError(f"the sample data has {', '.join(shipped)}, not {epic}")
            sources.append({"epic": epic, "path": str(shipped[epic])})
    if not sources and default_epic and history_root is not None:
        sources.append({"epic": default_epic, "store": str(history_root), "account": history_account})
    if not sources:
        raise DataError("no data: give --data FILE (or EPIC=FILE, repeatable), --sample, or --epic to read "
                        "the history store")
    return sources


def strategy_params(spec: dict, epics: list[str]) -> dict:
    """The parameters the strategy gets: the instrument and time frame of the run (so
    ``--epic``/``--time-frame`` reach it), overridden by any ``--param``."""
    defaults = {"epic": epics[0], "time_frame": spec["time_frame"]}
    if len(epics) > 1:
        defaults["epics"] = list(epics)
    return {**defaults, **spec.get("params", {})}


def load_data(spec: dict) -> dict[str, list[dict]]:
    """Bars per instrument (files of one instrument merged), within ``timerange``."""
    start, end = parse_timerange(spec.get("timerange"))
    files: dict[str, list[str]] = {}
    data: dict[str, list[dict]] = {}
    for source in spec["data"]:
        if "store" in source:
            data[source["epic"]] = load_stored_bars(Path(source["store"]), source["epic"], spec["time_frame"],
                                                    start, end, account=source.get("account"))
        else:
            files.setdefault(source["epic"], []).append(source["path"])
    for epic, paths in files.items():
        bars = select_timerange(load_bars(paths, epic, spec["time_frame"]), start, end)
        if not bars:
            raise DataError(f"no bars in the time range {spec.get('timerange')} for {epic}")
        data[epic] = bars
    return data


def run_info(spec: dict, cls: type, params: dict, bars: dict) -> dict:
    """What results.json records to make the run reproducible."""
    strategy = {"target": spec["strategy"], "class": f"{cls.__module__}:{cls.__qualname__}"}
    source = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if source:
        strategy.update(file=source, sha256=file_digest(source))
    # Files by their hash; the history store by what was read from it (it grows with downloads).
    data = [{**source, "sha256": file_digest(source["path"]), "bytes": Path(source["path"]).stat().st_size}
            if "path" in source else {**source, "bars": len(bars.get(source["epic"], [])),
                                      "first": bars[source["epic"]][0]["date"], "last": bars[source["epic"]][-1]["date"]}
            for source in spec["data"]]
    return {"maotrade_version": __version__, "python": sys.version.split()[0], "strategy": strategy,
            "params": params, "data": data, "run": spec, "ran_at": _now_iso(),
            "rerun": "maotrade backtest --rerun results.json"}


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_rerun(results: dict) -> dict:
    """The spec of an earlier run, after checking its data files are unchanged."""
    spec = results.get("run")
    if not isinstance(spec, dict):
        raise DataError("this results.json has no 'run' section (written by an older version?)")
    for source in results.get("data", []):
        if "path" not in source:
            continue  # the history store: the same time range reads the same bars
        path = Path(source["path"])
        if not path.exists():
            raise DataError(f"data file {path} of the earlier run is gone")
        if file_digest(path) != source["sha256"]:
            raise DataError(f"data file {path} changed since the earlier run (SHA-256 differs)")
    strategy = results.get("strategy") or {}
    if strategy.get("file") and Path(strategy["file"]).exists() and strategy.get("sha256"):
        if file_digest(strategy["file"]) != strategy["sha256"]:
            print(f"warning: strategy file {strategy['file']} changed since the earlier run", file=sys.stderr)
    return spec


def execute(spec: dict, show_progress: bool) -> tuple[BacktestResult, dict]:
    """Load the strategy and the data, run; return the result and its run info.

    Raises ``BadParameters`` when the strategy refuses its parameters and
    ``StrategyFailed`` when a callback raises (without ``keep_going``).
    """
    spec = {**spec, "strategy": resolve_target(spec["strategy"])}
    cls = load_strategy(spec["strategy"], spec.get("strategy_path") or ())
    data = load_data(spec)
    params = strategy_params(spec, list(data))
    first = next(iter(data))
    config = BacktestConfig(epic=first, time_frame=spec["time_frame"],
                            **{k: spec[k] for k in CONFIG_KEYS if k in spec})
    try:
        strategy = cls(dict(params))
    except PARAMETER_ERRORS as exc:
        raise BadParameters(f"strategy {cls.__name__} refused its parameters: {exc}") from None
    bars = sum(len(b) for b in data.values())
    try:
        result = _run(strategy, data, config, show_progress and bars >= PROGRESS_MIN_BARS, bars)
    except StrategyFailed as exc:
        if exc.where == "on_start" and isinstance(exc.__cause__, PARAMETER_ERRORS):
            raise BadParameters(f"strategy {cls.__name__} refused its parameters: {exc.__cause__}") from None
        raise
    return result, run_info(spec, cls, params, data)


def _run(strategy, data, config, progress: bool, total: int) -> BacktestResult:
    if not progress:
        return Backtest(strategy, data, config).run()
    from tqdm import tqdm

    with tqdm(total=total, unit="bar", unit_scale=True, file=sys.stderr, disable=None) as bar:
        return Backtest(strategy, data, config, progress=bar.update).run()


def report(result: BacktestResult, info: dict, out_dir: str, chart: bool, html_report: bool, as_json: bool,
           echo: Callable[[str], None]) -> None:
    """Write the files and print the summary (or the JSON)."""
    from maotrade.backtest.report import summary_lines, to_json, write_all

    written = write_all(result, Path(out_dir), chart=chart, run_info=info, html_report=html_report)
    if as_json:
        echo(json.dumps({**to_json(result, info), "files": {k: str(v) for k, v in written.items()}}, indent=2))
        return
    for line in summary_lines(result):
        echo(line)
    if result.first_error:
        echo("first strategy error (--keep-going carried on):\n" + result.first_error.rstrip())
    echo("wrote " + ", ".join(str(p) for p in written.values()))
