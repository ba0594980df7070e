"""The backtest and optimisation reports under a reports directory, for the dashboard.

A *report* is a directory holding ``results.json`` (a ``maotrade backtest`` run) or
``optimize.json`` (a ``maotrade optimize`` run, whose best run's report is in ``best/``),
found up to ``MAX_DEPTH`` levels below the root. Each is known by an id derived from
its place under the root, and only the files of ``BACKTEST_FILES``/``OPTIMISE_FILES``
that exist in it are served: a client names a report by id and a file by one of those
names, never by a path, so nothing outside the listed files can be reached.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

log = logging.getLogger("engine.api.reports")

MAX_DEPTH = 3  # reports/<group>/<run>/ at most; deeper folders are not looked into
MAX_REPORTS = 500  # the newest this many are listed
BACKTEST_FILES = ("report.html", "equity.png", "trades.csv", "results.json")
OPTIMISE_FILES = ("best/report.html", "importance.png", "trials.csv", "optimize.json", "best/equity.png",
                  "best/trades.csv", "best/results.json")
HEADLINE_METRICS = ("total_return", "sharpe", "max_drawdown", "win_rate", "trades")


@dataclass(frozen=True)
class ReportDir:
    """One report directory: its id, kind (``backtest`` or ``optimisation``) and place."""

    id: str
    kind: str
    name: str  # the directory relative to the root, shown to people
    path: Path

    @property
    def record(self) -> Path:
        """The JSON file that makes this directory a report."""
        return self.path / ("results.json" if self.kind == "backtest" else "optimize.json")

    def files(self) -> dict[str, Path]:
        """The servable files that exist, by their name."""
        names = BACKTEST_FILES if self.kind == "backtest" else OPTIMISE_FILES
        return {name: self.path / name for name in names if (self.path / name).is_file()}


def report_id(relative: str) -> str:
    """A stable id for the report directory at ``relative`` under the root."""
    return hashlib.sha256(relative.encode()).hexdigest()[:16]


class ReportIndex:
    """The reports found under ``root`` (looked for afresh on every call, so new runs appear)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        # A results.json holds every trade (it can be large): each is read again only once changed.
        self._summaries: dict[Path, tuple[tuple[float, int], dict]] = {}

    def directories(self) -> list[ReportDir]:
        """Every report directory under the root, newest record first."""
        if not self.root.is_dir():
            return []
        found: list[ReportDir] = []
        self._walk(self.root, 0, found)
        found.sort(key=lambda r: _mtime(r.record), reverse=True)
        return found[:MAX_REPORTS]

    def _walk(self, folder: Path, depth: int, found: list[ReportDir]) -> None:
        kind = ("optimisation" if (folder / "optimize.json").is_file()
                else "backtest" if (folder / "results.json").is_file() else None)
        if kind is not None and folder != self.root:
            name = folder.relative_to(self.root).as_posix()
            found.append(ReportDir(report_id(name), kind, name, folder))
            return  # an optimisation's best/ is part of it, not a report of its own
        if depth >= MAX_DEPTH:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError as exc:
            log.warning("event=reports_unreadable folder=%s error=%s", folder, exc)
            return
        for child in children:
            self._walk(child, depth + 1, found)

    def find(self, report: str) -> Optional[ReportDir]:
        """The report directory of id ``report``, or None."""
        return next((r for r in self.directories() if r.id == report), None)

    def file(self, report: str, name: str) -> Optional[Path]:
        """The listed file ``name`` of report ``report``, or None when either is not listed
        (or the file, through a link, lies outside the root)."""
        found = self.find(report)
        if found is None:
            return None
        path = found.files().get(name)
        if path is None:
            return None
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            return None
        return resolved

    def listing(self) -> list[dict]:
        """Each report with its strategy, when it ran, its headline figures and its files."""
        listed, cache = [], {}
        for report in self.directories():
            try:
                stat = report.record.stat()
                version = (stat.st_mtime, stat.st_size)
            except OSError:
                version = None
            known = self._summaries.get(report.record)
            entry = known[1] if known is not None and version is not None and known[0] == version else summary(report)
            if version is not None:
                cache[report.record] = (version, entry)
            listed.append({**entry, "files": list(report.files()),
                           "main": next((n for n in ("report.html", "best/report.html") if n in report.files()),
                                        None)})
        self._summaries = cache  # reports gone from the folder are forgotten
        return listed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def summary(report: ReportDir) -> dict:
    """What the reports view shows of one report; an unreadable record is listed with its error."""
    files = report.files()
    out = {"id": report.id, "kind": report.kind, "name": report.name, "files": list(files),
           "main": next((n for n in ("report.html", "best/report.html") if n in files), None),
           "strategy": None, "ran_at": _iso(_mtime(report.record)), "figures": {}, "error": None}
    try:
        record = json.loads(report.record.read_text())
    except (OSError, ValueError) as exc:
        out["error"] = f"{report.record.name} unreadable: {exc}"
        return out
    if not isinstance(record, dict):
        out["error"] = f"{report.record.name} is not a JSON object"
        return out
    out["ran_at"] = record.get("ran_at") or out["ran_at"]
    if report.kind == "backtest":
        strategy = record.get("strategy")
        out["strategy"] = strategy.get("target") if isinstance(strategy, dict) else strategy
        metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
        out["figures"] = {name: metrics.get(name) for name in HEADLINE_METRICS if name in metrics}
        out["instruments"] = sorted((record.get("instruments") or {}).keys()) if isinstance(
            record.get("instruments"), dict) else []
    else:
        out["strategy"] = record.get("strategy")
        settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
        best = record.get("best") if isinstance(record.get("best"), dict) else {}
        out["figures"] = {"metric": settings.get("metric"), "trials": settings.get("trials"),
                          "backtests": record.get("backtests"), "best_trial": best.get("trial"),
                          "best_params": best.get("params"), "in_sample": best.get("in_sample"),
                          "out_of_sample": best.get("out_of_sample")}
        out["instruments"] = [record["epic"]] if record.get("epic") else []
    return out

