#!/usr/bin/env python3
"""Benchmark of pre-trade risk and webhook signature checks (run: python scripts/bench_risk.py).

Measures the cost the order path pays per order: ``RiskEngine.check`` with every limit
set, per account and across accounts, for an engine of many accounts each with working
orders; and verifying one alert signature.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout, not an installed copy

from engine.api.webhook import sign_alert  # noqa: E402
from engine.risk import RiskEngine, RiskSettings  # noqa: E402
from maotrade.errors import OrderRefused  # noqa: E402
from maotrade.order import BaseOrder  # noqa: E402

LIMITS = {"max_order_qty": 1e9, "max_order_notional": 1e12, "min_order_value": 1.0, "max_position": 1e9,
          "daily_loss_limit": 1e9, "max_open_orders": 10_000, "max_orders_per_window": 10**9,
          "rate_window_s": 60.0}


class View:
    """Engine state of ``accounts`` accounts with ``working`` working orders each."""

    def __init__(self, accounts: int, working: int):
        self.ids = [str(i) for i in range(accounts)]
        self.orders = {a: [BaseOrder(client_order_id=f"{a}-{j}", account=a, epic="SPY", qty=1.0,
                                     order_type="LIMIT", price=100.0) for j in range(working)] for a in self.ids}

    def accounts(self):
        return self.ids

    def position(self, account, epic):
        return 10.0

    def open_orders(self, account):
        return self.orders[account]

    def price(self, account, epic):
        return 450.0

    def daily_pnl(self, account):
        return -10.0


def bench(accounts: int, working: int, rounds: int) -> list[float]:
    risk = RiskEngine(RiskSettings.model_validate({"defaults": LIMITS, "global": LIMITS}))
    view = View(accounts, working)
    order = BaseOrder(client_order_id="b", account="0", epic="SPY", qty=1.0)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        try:
            risk.check(order, view)
        except OrderRefused as exc:
            raise SystemExit(f"benchmark order refused: {exc.code}")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    for accounts, working in ((1, 0), (10, 5), (100, 5), (100, 50)):
        times = bench(accounts, working, args.rounds)
        print(f"risk check, {accounts:>3} accounts x {working:>2} working orders: "
              f"median {statistics.median(times) * 1e6:8.1f} us  p99 "
              f"{sorted(times)[int(len(times) * 0.99)] * 1e6:8.1f} us")
    body = {"account": "601", "ticker": "EURUSD", "action": "buy", "quantity": 7, "alert_id": "x",
            "timestamp": 1700000000}
    start = time.perf_counter()
    for _ in range(args.rounds):
        sign_alert(body, "a-secret-of-some-length")
    print(f"alert signature: {(time.perf_counter() - start) / args.rounds * 1e6:.1f} us")


if __name__ == "__main__":
    main()
