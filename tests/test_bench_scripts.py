"""The benchmark scripts run: a small market-data run of `scripts/bench` measures the real
engine with the flood broker (from tests/, so it must be allowed explicitly) and loses
nothing. Figures are not checked here: performance is read from the scripts' output."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from engine.loader import ALLOW_ENV

ROOT = Path(__file__).resolve().parent.parent


def test_the_market_data_benchmark_runs_the_engine_and_loses_no_bar():
    # As an engineer runs it: without the allowlist the test session gives its own engines.
    env = {k: v for k, v in os.environ.items() if k != ALLOW_ENV}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), "--only", "md", "--reps", "1",
                           "--bars", "20000"], capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = re.findall(r"^\s+engine, (\d+) accounts?\s+([\d,]+)\s.*?(\d+)\s*$", done.stdout, re.MULTILINE)
    assert [accounts for accounts, _, _ in rows] == ["1", "10"], done.stdout
    assert all(int(bars.replace(",", "")) > 0 and lost == "0" for _, bars, lost in rows), done.stdout
