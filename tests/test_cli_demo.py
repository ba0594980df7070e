"""The README's main job: `maotrade start --account 123` on the embedded default."""
from __future__ import annotations

import json
import os
import subprocess

from tests.engine_kit import ROOT, maotrade_cmd, run_cli
from tests.kit import wait_until


def test_demo_runs_trades_reports_status_and_stops_cleanly(tmp_path):
    data = tmp_path / "data"
    out = open(tmp_path / "out.txt", "w+")
    env = {**os.environ, "MAOTRADE_MASTER_KEY": ""}
    engine = subprocess.Popen(maotrade_cmd("start", "--account", "123", "--data-dir", str(data),
                                           "--param", "fast=1", "--param", "slow=2"),
                              cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        text = lambda: (tmp_path / "out.txt").read_text()
        wait_until(lambda: "FILLED" in text(), 90, interval=0.1, what="a demo order filled")
        output = text()
        assert "account 123 [paper]: ready" in output
        assert "EURUSD 1s bar" in output
        assert "balance 100,000.00 USD" in output
        status = run_cli("status", "--json", "--data-dir", str(data))
        assert status.returncode == 0, status.stderr
        [account] = json.loads(status.stdout)["accounts"]
        assert account["account"] == "123" and account["state"] == "ready" and account["pid"]
        assert account["rss_bytes"] > 0
        human = run_cli("status", "--data-dir", str(data))
        assert "account 123 [paper] ready" in human.stdout
        stopped = run_cli("stop", "--data-dir", str(data))
        assert stopped.returncode == 0, stopped.stderr
        assert engine.wait(30) == 0
        assert "stopped cleanly" in text()
        assert "Traceback" not in text()
        assert run_cli("status", "--data-dir", str(data)).returncode == 1
    finally:
        if engine.poll() is None:
            engine.kill()
        out.close()


def test_help_is_complete():
    for args in (["--help"], ["start", "--help"], ["status", "--help"], ["stop", "--help"],
                 ["admin", "--help"], ["admin", "broker", "add", "--help"], ["admin", "account", "add", "--help"],
                 ["admin", "mapping", "set", "--help"], ["admin", "serve", "--help"], ["backtest", "--help"],
                 ["new-strategy", "--help"]):
        result = run_cli(*args)
        assert result.returncode == 0 and "Usage:" in result.stdout, args
    assert "--config-url" in run_cli("start", "--help").stdout
    start_help = run_cli("start", "--help").stdout
    assert all(option in start_help for option in ("--on-strategy-failure", "--strategy-path", "-v, --verbose",
                                                   "-q, --quiet"))
    backtest_help = run_cli("backtest", "--help").stdout
    assert all(option in backtest_help for option in ("--sample", "--keep-going", "--rerun", "--strategy-path",
                                                      "EPIC=FILE", "--no-html"))
