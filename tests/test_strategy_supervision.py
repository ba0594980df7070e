"""``maotrade start`` when things go wrong around a strategy or an account: a strategy
that dies is one line, shown in ``status``, restarted with backoff or the engine stops;
a callback that keeps raising is logged once with a count; an engine whose only
account failed for good exits 1 saying why; the demo's own stop loss reads as such;
one console format, with -q/-v."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from tests.engine_kit import ROOT, maotrade_cmd, run_cli
from tests.kit import wait_until

STRATEGIES = '''
from maotrade.examples.ma_cross import MovingAverageCross
from maotrade.strategy import Strategy


class BadParams(MovingAverageCross):
    """Dies in on_start: fast must be below slow."""


class Typo(Strategy):
    def on_start(self):
        self.subscribe("EURUSD", 1)

    def on_market_data(self, bar):
        return bar["clsoe"]
'''
CONSOLE_LINE = re.compile(r"^\d\d:\d\d:\d\d (WARNING |ERROR )?\S")


class Engine:
    """``maotrade start`` in its own process, output collected in a file."""

    def __init__(self, tmp_path, *args, env=None):
        (tmp_path / "mine.py").write_text(STRATEGIES)
        self.data = tmp_path / "data"
        self.out_path, self.err_path = tmp_path / "out.txt", tmp_path / "err.txt"
        self.out, self.err = open(self.out_path, "w"), open(self.err_path, "w")
        self.process = subprocess.Popen(maotrade_cmd("start", "--account", "123", "--data-dir", str(self.data),
                                                     *args),
                                        cwd=tmp_path, env={**os.environ, "MAOTRADE_MASTER_KEY": "", **(env or {})},
                                        stdout=self.out, stderr=self.err)

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def log(self) -> str:
        return (self.data / "logs" / "maotrade.log").read_text()

    def wait(self, timeout=60) -> int:
        return self.process.wait(timeout)

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.out.close()
        self.err.close()


def test_a_strategy_dying_in_on_start_stops_the_engine_with_one_line_when_told_to(tmp_path):
    engine = Engine(tmp_path, "--strategy", "mine.py:BadParams", "--param", "fast=50", "--param", "slow=10",
                    "--on-strategy-failure", "stop", "--duration", "60")
    try:
        assert engine.wait() == 1
        out, err = engine.stdout(), engine.stderr()
        died = [line for line in out.splitlines() if "died" in line]
        assert died == [died[0]] and died[0].endswith(
            "strategy BadParams-1 died in on_start: ValueError: need 0 < fast < slow, got fast=50 slow=10; "
            "stopping the engine (--on-strategy-failure stop; traceback in the log file)")
        assert out.rstrip().endswith("stopped")
        assert "Traceback" not in out + err
        assert "Traceback (most recent call last)" in engine.log() and "need 0 < fast < slow" in engine.log()
    finally:
        engine.close()


def test_a_dead_strategy_is_restarted_with_backoff_and_shown_in_status(tmp_path):
    engine = Engine(tmp_path, "--strategy", "mine.py:BadParams", "--param", "fast=50", "--param", "slow=10",
                    "--duration", "90")
    try:
        wait_until(lambda: "restarted (pid" in engine.stdout(), 60, interval=0.1, what="a strategy restart")
        out = engine.stdout()
        assert "strategy BadParams-1 died in on_start: ValueError: need 0 < fast < slow" in out
        assert "restarting in 1s" in out
        wait_until(lambda: "restarting in 2s" in engine.stdout(), 60, interval=0.1, what="a doubled backoff")
        status = run_cli("status", "--json", "--data-dir", str(engine.data))
        assert status.returncode == 0, status.stderr
        [strategy] = json.loads(status.stdout)["strategies"]
        assert strategy["name"] == "BadParams-1" and strategy["target"] == f"{tmp_path / 'mine.py'}:BadParams"
        assert strategy["restarts"] >= 1 and "need 0 < fast < slow" in strategy["reason"]
        human = run_cli("status", "--data-dir", str(engine.data)).stdout
        assert re.search(r"strategy BadParams-1 \[.*mine.py:BadParams\] (restarting|running)", human)
        assert run_cli("stop", "--data-dir", str(engine.data)).returncode == 0
        assert engine.wait() == 0
        assert "Traceback" not in engine.stdout() + engine.stderr()
    finally:
        engine.close()


def test_a_callback_raising_on_every_bar_is_logged_once_then_counted(tmp_path):
    # One-second bars for about six seconds: the callback raises on each of them.
    engine = Engine(tmp_path, "--strategy", "mine.py:Typo", "--no-bars", "--duration", "8")
    try:
        assert engine.wait() == 0
        err = engine.stderr()
        assert err.count("KeyError: 'clsoe'") == 1, err
        assert "Traceback" not in err
        summary = re.search(r"strategy_callback_failed_again strategy=Typo kind='on_market_data KeyError' "
                            r"count=(\d+) total=(\d+)", err)
        assert summary and int(summary.group(2)) == int(summary.group(1)) + 1 >= 3, err
        assert "Traceback (most recent call last)" in engine.log() and 'bar["clsoe"]' in engine.log()
    finally:
        engine.close()


def test_an_engine_whose_only_account_failed_for_good_exits_1_saying_why(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(ROOT / "conf" / "risk.json", conf)
    registry = json.loads((ROOT / "conf" / "demo-registry.json").read_text())
    # Valid as written (the registry checks settings when they are added), fatal when the
    # broker starts: the file it must replay is not there.
    registry["brokers"][0]["brokerConfig"].update(replay_file=str(tmp_path / "missing.csv"), replay_epic="EURUSD")
    (conf / "demo-registry.json").write_text(json.dumps(registry))
    engine = Engine(tmp_path, "--no-demo", "--duration", "60", env={"MAOTRADE_CONF_DIR": str(conf)})
    try:
        assert engine.wait() == 1
        out = engine.stdout()
        assert re.search(r"stopping with exit code 1: account 123 failed for good \(paper replay_file: .*\); "
                         r"nothing left to run", out), out
    finally:
        engine.close()


def test_the_demo_stop_loss_reads_as_one_and_every_console_line_has_one_format(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(ROOT / "conf" / "risk.json", conf)
    registry = json.loads((ROOT / "conf" / "demo-registry.json").read_text())
    registry["brokers"][0]["brokerConfig"]["volatility"] = 0.004  # stops are hit within seconds
    (conf / "demo-registry.json").write_text(json.dumps(registry))
    engine = Engine(tmp_path, "--param", "fast=1", "--param", "slow=2", "--duration", "90",
                    env={"MAOTRADE_CONF_DIR": str(conf)})
    try:
        closed = re.compile(r"EURUSD (stop loss|take profit)( of order \S+)? hit: the broker closed the position")
        wait_until(lambda: closed.search(engine.stdout()), 80, interval=0.2, what="a bracket close")
        assert run_cli("stop", "--data-dir", str(engine.data)).returncode == 0
        assert engine.wait() == 0
        out, err = engine.stdout(), engine.stderr()
        assert "external_order" not in out + err
        lines = [line for line in (out + err).splitlines() if line]
        assert lines and all(CONSOLE_LINE.match(line) for line in lines), [
            line for line in lines if not CONSOLE_LINE.match(line)]
    finally:
        engine.close()


def test_quiet_and_verbose_consoles(tmp_path):
    quiet = Engine(tmp_path, "-q", "--duration", "4")
    try:
        assert quiet.wait() == 0
        out = quiet.stdout()
        assert "bar  O" not in out and "order " not in out and "balance" not in out
    finally:
        quiet.close()
    (tmp_path / "v").mkdir()
    verbose = Engine(tmp_path / "v", "-v", "--no-demo", "--duration", "3")
    try:
        assert verbose.wait() == 0
        assert re.search(r"^\d\d:\d\d:\d\d worker_started account=123", verbose.stderr(), re.M), verbose.stderr()
    finally:
        verbose.close()


def test_a_strategy_that_stops_by_itself_is_not_restarted(tmp_path):
    (tmp_path / "done.py").write_text(
        "from maotrade.strategy import Strategy\n\n\nclass Done(Strategy):\n"
        "    def on_start(self):\n        self.stop()\n")
    engine = Engine(tmp_path, "--strategy", "done.py:Done", "--duration", "60")
    try:
        wait_until(lambda: "strategy Done-1 stopped by itself" in engine.stdout(), 60, interval=0.1,
                   what="the strategy's own stop")
        [strategy] = json.loads(run_cli("status", "--json", "--data-dir", str(engine.data)).stdout)["strategies"]
        assert strategy["state"] == "stopped" and strategy["restarts"] == 0
        assert run_cli("stop", "--data-dir", str(engine.data)).returncode == 0
        assert engine.wait() == 0 and "restart" not in engine.stdout()
    finally:
        engine.close()
