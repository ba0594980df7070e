"""Optimisation: optuna over walk-forward backtests, in one process and on a real Dask
cluster (a ``dask scheduler`` and two ``dask worker`` processes on loopback)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from account_managers.paper.market import synthetic_bars
from maotrade.examples.ma_cross import MovingAverageCross
from maotrade.optimize.evaluate import Context
from maotrade.optimize.executors import ClusterError, DaskExecutor, InlineExecutor
from maotrade.optimize.space import FloatRange, IntRange, SpaceError, grid, narrow, space_of
from maotrade.optimize.splits import SplitError, walk_forward
from maotrade.optimize.study import StudySettings, run_study
from maotrade.strategy import Strategy
from tests.engine_kit import run_cli
from tests.kit import free_port, wait_until

pytest.importorskip("optuna")
pytest.importorskip("distributed")

TF = 900
START = 1_704_067_200_000  # 2024-01-01
BARS = synthetic_bars("EURUSD", 1.085, 42, TF, START, START + 3000 * TF * 1000, 3000)
SPACE = {"fast": IntRange(2, 10, 4), "slow": IntRange(10, 40, 10)}


def _context() -> Context:
    return Context(MovingAverageCross, {}, BARS, walk_forward(len(BARS), 2, 0.3), "EURUSD", TF)


def _dask_command(*args: str) -> list[str]:
    executable = Path(sys.executable).with_name("dask")
    return [str(executable), *args] if executable.exists() else [sys.executable, "-m", "dask", *args]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real scheduler and two single-threaded workers, started with the ordinary commands."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    processes = [subprocess.Popen(_dask_command("scheduler", "--host", "127.0.0.1", "--port", str(port),
                                                "--no-dashboard"),
                                  stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler.txt", "w"))]
    for index in range(2):
        processes.append(subprocess.Popen(
            _dask_command("worker", address, "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1",
                          "--no-dashboard", "--name", f"w{index}"),
            stdout=subprocess.DEVNULL, stderr=open(logs / f"worker{index}.txt", "w")))
    try:
        def two_workers():
            for process in processes:
                assert process.poll() is None, f"a dask process exited: {(logs / 'scheduler.txt').read_text()}"
            try:
                with Client(address, timeout="2s") as client:
                    return len(client.scheduler_info()["workers"]) == 2
            except (OSError, TimeoutError):
                return False
        wait_until(two_workers, 60, interval=0.5, what="the dask scheduler with two workers")
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_grid_sweep_on_two_dask_workers_equals_the_sweep_in_one_process(dask_cluster):
    settings = StudySettings(sampler="grid", trials=100, metric="sharpe", min_trades=5, batch=4)
    alone = run_study(_context(), SPACE, settings, InlineExecutor())
    executor = DaskExecutor(address=dask_cluster)
    try:
        spread = run_study(_context(), SPACE, settings, executor)
    finally:
        executor.close()
    assert len(alone.trials) == len(spread.trials) == 12
    assert alone.best is not None and spread.best.params == alone.best.params
    assert [t.value("sharpe") for t in spread.trials] == [t.value("sharpe") for t in alone.trials]
    assert [t.value("sharpe", "out_of_sample") for t in spread.trials] == \
        [t.value("sharpe", "out_of_sample") for t in alone.trials]
    # The sweep really was split: both worker processes ran trials, and neither was this one.
    workers = {t.worker for t in spread.trials}
    assert len(workers) == 2 and f":{os.getpid()}" not in "".join(workers)
    # fast=10 slow=10 is refused by the strategy: it does not count, here or there.
    refused = [t for t in spread.trials if t.params == {"fast": 10, "slow": 10}]
    assert refused and refused[0].error and spread.score(refused[0]) is None


def test_tpe_on_the_cluster_proposes_and_finds_what_one_process_does(dask_cluster):
    settings = StudySettings(sampler="tpe", trials=16, metric="total_return", min_trades=5, seed=7, batch=8)
    space = {"fast": IntRange(2, 12), "slow": IntRange(14, 60, 2)}
    alone = run_study(_context(), space, settings, InlineExecutor())
    executor = DaskExecutor(address=dask_cluster)
    try:
        spread = run_study(_context(), space, settings, executor)
    finally:
        executor.close()
    assert [t.params for t in spread.trials] == [t.params for t in alone.trials]
    assert spread.best.params == alone.best.params
    assert spread.importance.keys() == {"fast", "slow"}


def test_optimize_command_on_the_cluster_writes_table_plot_and_best_report(dask_cluster, tmp_path):
    data = tmp_path / "bars.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["date", "open", "high", "low", "close", "volume"])
        for bar in BARS:
            writer.writerow([bar["date"], bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]])
    common = ["optimize", "--strategy", "maotrade.examples.ma_cross:MovingAverageCross", "--epic", "EURUSD",
              "--time-frame", str(TF), "--data", str(data), "--sampler", "grid", "--space", "fast", "--space",
              "slow", "--range", "fast=2:10:4", "--range", "slow=10:40:10", "--windows", "2", "--min-trades", "5",
              "--no-progress"]
    spread = run_cli(*common, "--cluster", dask_cluster, "--out", str(tmp_path / "spread"), timeout=300)
    assert spread.returncode == 0, spread.stderr
    alone = run_cli(*common, "--workers", "1", "--out", str(tmp_path / "alone"), timeout=300)
    assert alone.returncode == 0, alone.stderr
    best = [line for line in spread.stdout.splitlines() if line.startswith("best: ")]
    assert best and best == [line for line in alone.stdout.splitlines() if line.startswith("best: ")]
    assert "2 Dask worker(s) on tcp://127.0.0.1" in spread.stdout
    assert "window 1: best in sample" in spread.stdout
    record = json.loads((tmp_path / "spread" / "optimize.json").read_text())
    assert record["best"]["params"] == json.loads(best[0].split(" ", 3)[3])
    assert (tmp_path / "spread" / "importance.png").stat().st_size > 1000
    result = json.loads((tmp_path / "spread" / "best" / "results.json").read_text())
    assert result["metrics"]["bars"] == len(BARS)
    with (tmp_path / "spread" / "trials.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 12


def test_an_unreachable_cluster_is_one_line():
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1"):
        DaskExecutor(address=f"tcp://127.0.0.1:{free_port()}")


class Untunable(Strategy):
    """Declares nothing to tune."""


def test_spaces_and_splits_refuse_what_makes_no_sense():
    with pytest.raises(SpaceError, match="declares no param_space"):
        space_of(Untunable)
    with pytest.raises(SpaceError, match="has no parameter nope"):
        space_of(MovingAverageCross, ["nope"])
    assert len(grid(space_of(MovingAverageCross, ["fast", "slow"]))) == 29 * 23
    assert narrow(SPACE, "slow=20:30:5")["slow"].values() == [20, 25, 30]
    with pytest.raises(SpaceError, match="is empty"):
        narrow(SPACE, "slow=30:20")
    with pytest.raises(SpaceError, match="a grid needs one"):
        FloatRange(0.0, 1.0).values()
    with pytest.raises(SplitError, match="fewer than 50 bars"):
        walk_forward(300, 4, 0.3)
    settings = StudySettings(sampler="grid", trials=10)
    with pytest.raises(SpaceError, match="the grid has 12 points, more than --trials 10"):
        run_study(_context(), SPACE, settings, InlineExecutor())



STRATEGY_FILE = '''
from maotrade.examples.ma_cross import MovingAverageCross
from maotrade.optimize import IntRange


class FileCross(MovingAverageCross):
    param_space = {"fast": IntRange(2, 6, 4), "slow": IntRange(10, 30, 10)}
'''


def test_a_strategy_from_a_file_the_workers_cannot_import_is_shipped_by_value(dask_cluster, tmp_path):
    import importlib.util

    path = tmp_path / "file_cross_strategy.py"
    path.write_text(STRATEGY_FILE)
    spec = importlib.util.spec_from_file_location("file_cross_strategy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["file_cross_strategy"] = module
    try:
        spec.loader.exec_module(module)
        context = Context(module.FileCross, {}, BARS, walk_forward(len(BARS), 2, 0.3), "EURUSD", TF)
        settings = StudySettings(sampler="grid", trials=10, metric="sharpe", min_trades=5)
        executor = DaskExecutor(address=dask_cluster)
        try:
            spread = run_study(context, space_of(module.FileCross), settings, executor)
        finally:
            executor.close()
        alone = run_study(context, space_of(module.FileCross), settings, InlineExecutor())
    finally:
        del sys.modules["file_cross_strategy"]
    assert [t.error for t in spread.trials] == [""] * 6
    assert spread.best.params == alone.best.params


def test_windows_are_prepared_once_per_process_and_never_shipped():
    import cloudpickle

    from maotrade.optimize.evaluate import evaluate

    context = _context()
    fresh = len(cloudpickle.dumps(context))
    first = evaluate(0, {"fast": 4, "slow": 20}, context)
    window = context.windows[0]
    prepared = context.window_bars(window.start, window.split)
    assert context.window_bars(window.start, window.split) is prepared, "made once, then reused"
    assert [bar["close"] for bar in prepared.timeline] == [bar["close"] for bar in BARS[window.start:window.split]]
    assert len(cloudpickle.dumps(context)) == fresh, "what one process prepared does not travel to workers"
    shipped = cloudpickle.loads(cloudpickle.dumps(context))
    again = evaluate(0, {"fast": 4, "slow": 20}, shipped)
    assert (again.in_sample, again.out_of_sample) == (first.in_sample, first.out_of_sample)
    assert again.backtests == first.backtests == 2 * len(context.windows)
