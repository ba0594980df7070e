"""``maotrade backtest`` and ``maotrade new-strategy`` as a new user meets them: the README's
commands on the sample data, strategies given as files, errors that stop the run, the
files a run leaves, and a run repeated from its results.json."""
import csv
import gzip
import json
import re
import subprocess

from tests.engine_kit import ROOT, maotrade_cmd, run_cli

MA = "maotrade.examples.ma_cross:MovingAverageCross"

TYPO_STRATEGY = '''
from maotrade.strategy import Strategy

class Typo(Strategy):
    def on_start(self):
        self.subscribe(self.params["epic"], self.params["time_frame"])

    def on_market_data(self, bar):
        self.last = bar["clsoe"]
'''


def cli(*args, cwd=None, timeout=120):
    return subprocess.run(maotrade_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT)


def test_readme_backtest_on_the_sample_data_prints_the_summary_and_writes_every_file(tmp_path):
    out = tmp_path / "out"
    done = run_cli("backtest", "--strategy", MA, "--sample", "--epic", "EURUSD", "--param", "stop_loss=0.002",
                   "--param", "take_profit=0.004", "--out", str(out), timeout=180)
    assert done.returncode == 0, done.stderr
    assert "total return" in done.stdout and "buy and hold" in done.stdout
    assert re.search(r"exits: .*signal \d+", done.stdout)
    assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    # Self-contained: plotly.js inlined, nothing fetched from the network.
    assert "Plotly.newPlot" in page and not re.search(r"<script[^>]+src=", page)
    assert "EURUSD: price, entries and exits" in page and "Equity and drawdown" in page
    rows = list(csv.DictReader((out / "trades.csv").open()))
    assert rows and {r["exit_reason"] for r in rows} <= {"signal", "stop loss", "take profit", "end"}
    assert {"stop loss", "take profit"} & {r["exit_reason"] for r in rows}
    for row in rows:
        assert re.fullmatch(r"-?\d+\.\d{4}", row["net_pnl"]) and len(row["entry_price"]) <= 12, row


def test_a_strategy_file_with_a_typo_prints_its_traceback_and_exits_1(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(TYPO_STRATEGY)
    done = run_cli("backtest", "--strategy", f"{path}:Typo", "--sample", "--epic", "EURUSD", "--out",
                   str(tmp_path / "out"))
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "KeyError: 'clsoe'" in done.stderr and 'bar["clsoe"]' in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: strategy Typo raised KeyError: 'clsoe' in "
                                                           "on_market_data(EURUSD 60s bar at 2024-01-01T00:00:00Z)")
    kept = run_cli("backtest", "--strategy", f"{path}:Typo", "--sample", "--epic", "EURUSD", "--keep-going",
                   "--out", str(tmp_path / "out"), "--no-html", "--no-chart")
    assert kept.returncode == 0, kept.stderr
    assert "strategy errors 20160 (on_market_data KeyError x20160)" in kept.stdout
    assert kept.stdout.count("Traceback") == 1


def test_parameters_the_strategy_refuses_exit_2_with_one_line(tmp_path):
    done = run_cli("backtest", "--strategy", MA, "--sample", "--epic", "EURUSD", "--param", "fast=50",
                   "--param", "slow=10", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: strategy MovingAverageCross refused its parameters: need 0 < fast < slow, got fast=50 slow=10"]


def test_epic_and_time_frame_options_reach_the_strategy(tmp_path):
    done = run_cli("backtest", "--strategy", MA, "--sample", "--epic", "GBPUSD", "--time-frame", "300",
                   "--out", str(tmp_path / "out"), "--json", "--no-html", "--no-chart")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["params"]["epic"] == "GBPUSD" and answer["params"]["time_frame"] == 300
    assert answer["metrics"]["trades"] > 0 and answer["bars"] == 20160 // 5
    assert list(answer["instruments"]) == ["GBPUSD"] and not answer["warnings"]


def test_a_strategy_found_as_a_file_in_the_current_directory_or_on_the_strategy_path(tmp_path):
    new = cli("new-strategy", "my_breakout", "--out", str(tmp_path))
    assert new.returncode == 0, new.stderr
    assert (tmp_path / "my_breakout.py").exists() and "my_breakout.py:MyBreakout" in new.stdout
    common = ["--sample", "--epic", "EURUSD", "--no-html", "--no-chart", "--out", str(tmp_path / "out")]
    for how, extra, cwd in [("file", ["--strategy", "my_breakout.py:MyBreakout"], tmp_path),
                            ("module in cwd", ["--strategy", "my_breakout:MyBreakout"], tmp_path),
                            ("strategy path", ["--strategy", "my_breakout:MyBreakout", "--strategy-path",
                                               str(tmp_path)], ROOT)]:
        done = cli("backtest", *extra, *common, cwd=cwd)
        assert done.returncode == 0, (how, done.stderr)
        trades = int(re.search(r"trades\s+(\d+)", done.stdout).group(1))
        assert trades > 0, (how, done.stdout)
    missing = cli("backtest", "--strategy", "nowhere:Breakout", *common, cwd=tmp_path)
    assert missing.returncode == 2 and "no module 'nowhere'" in missing.stderr
    again = cli("new-strategy", "my_breakout", "--out", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_results_json_records_the_run_and_rerun_repeats_it(tmp_path):
    data = tmp_path / "gbp.csv"
    data.write_bytes(gzip.open(ROOT / "maotrade/examples/data/GBPUSD-1m.csv.gz").read())
    first = tmp_path / "first"
    done = run_cli("backtest", "--strategy", MA, "--data", f"GBPUSD={data}", "--param", "fast=5",
                   "--commission", "0.0001", "--out", str(first), "--no-html", "--no-chart")
    assert done.returncode == 0, done.stderr
    results = json.loads((first / "results.json").read_text())
    assert results["strategy"]["class"] == MA and results["params"]["fast"] == 5
    assert results["data"][0]["epic"] == "GBPUSD" and len(results["data"][0]["sha256"]) == 64
    assert results["maotrade_version"] and results["config"]["commission"] == 0.0001
    second = tmp_path / "second"
    again = run_cli("backtest", "--rerun", str(first / "results.json"), "--out", str(second), "--no-html",
                    "--no-chart")
    assert again.returncode == 0, again.stderr
    assert json.loads((second / "results.json").read_text())["metrics"] == results["metrics"]
    data.write_text(data.read_text().replace("1.27", "1.28", 1))
    changed = run_cli("backtest", "--rerun", str(first / "results.json"), "--out", str(second))
    assert changed.returncode == 2 and "changed since the earlier run" in changed.stderr


def test_the_readme_strategy_example_backtests_as_a_file_and_as_a_module_in_the_current_directory(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Writing a strategy"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", 10)]
    (tmp_path / "breakout.py").write_text(code)
    common = ["--sample", "--epic", "EURUSD", "--no-html", "--no-chart", "--out", str(tmp_path / "out")]
    for target in ("breakout.py:Breakout", "breakout:Breakout"):
        done = cli("backtest", "--strategy", target, *common, cwd=tmp_path)
        assert done.returncode == 0, (target, done.stderr)
        assert int(re.search(r"trades\s+(\d+)", done.stdout).group(1)) > 0, done.stdout
