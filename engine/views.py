"""Documents the engine shows: an account's portfolio and ``maotrade status``.

Pure reads of the engine's state (plus the workers' CPU and memory from psutil); nothing
here changes what it reads.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Iterable

import psutil

from engine.accounts import AccountBook, AccountRuntime
from engine.journal import Journal
from engine.orders import OrderRouter
from engine.supervisor import Supervisor
from maotrade.order import BaseOrder

if TYPE_CHECKING:  # market_data imports the bus; views need only its reads
    from engine.market_data import MarketData


def order_view(order: BaseOrder) -> dict:
    """The order dict strategies receive in ``on_order``."""
    return order.to_dict(with_fills=False)


def portfolio_view(journal: Journal, router: OrderRouter, runtime: AccountRuntime) -> dict:
    """The engine's positions of an account with open P&L at the last known price, and its open orders."""
    positions = []
    for position in journal.positions(runtime.account):
        if position.is_flat and not position.realized_pnl:
            continue
        positions.append(position.to_dict(runtime.last_price.get(position.epic)))
    orders = [order_view(o) for o in router.open_orders(runtime.account)]
    return {"positions": positions, "orders": orders}


def _process_usage(pid) -> tuple:
    """(cpu percent, resident bytes) of a worker, (None, None) when it is gone or unknown."""
    if not pid:
        return None, None
    with contextlib.suppress(psutil.Error):  # gone since: shown as unknown
        proc = psutil.Process(pid)
        return proc.cpu_percent(interval=None), proc.memory_info().rss
    return None, None


def status_view(*, accounts: AccountBook, journal: Journal, router: OrderRouter, supervisor: Supervisor,
                market_data: "MarketData", sessions: Iterable,
                started: float, data_dir, malformed_messages: int) -> dict:
    """Everything ``maotrade status`` shows."""
    listed = []
    for account, runtime in accounts.items():
        handle = supervisor.workers.get(account)
        pid = handle.pid if handle else None
        cpu, rss = _process_usage(pid)
        listed.append({
            "account": account, "broker": runtime.broker_name, "state": runtime.state,
            "reason": runtime.reason, "pid": pid, "cpu_percent": cpu, "rss_bytes": rss,
            "restarts": handle.restarts if handle else 0, "account_info": runtime.account_info,
            "portfolio": portfolio_view(journal, router, runtime),
            "subscriptions": [{"epic": e, "time_frame": t} for e, t in market_data.streams(account)],
            "discrepancies": len(journal.discrepancies(account)),
            "stale_data": market_data.stale.stale(account),
            "market_data_held": account in market_data.held,
        })
    return {"engine": {"pid": os.getpid(), "uptime_s": round(time.time() - started, 1),
                       "data_dir": str(data_dir), "malformed_messages": malformed_messages,
                       "orders_refused": router.rejected_count},
            "accounts": listed,
            "clients": [{"name": s.name, "subscriptions": len(market_data.streams_of(s)), "backlog": len(s.backlog),
                         "queued_bars": s.queued_bars, "held": s.holding, "conflated": s.conflated_count}
                        for s in sorted(sessions, key=lambda c: c.name) if s.name]}
