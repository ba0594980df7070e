"""Reconciliation: differences between the engine's journal and the broker, and what an
operator does about them.

A difference is recorded (journal ``discrepancies``) each time a portfolio from the broker
disagrees with the engine: a position quantity, or a working order the engine does not
know. ``adopt`` makes the engine take the broker's view; ``ignore`` closes the record.
Both are written to the audit log with who asked.
"""
from __future__ import annotations

import logging
from typing import Optional

from engine.journal import Journal
from maotrade.errors import InvalidOrder
from maotrade.order import BaseOrder
from maotrade.positions import Position

log = logging.getLogger(__name__)

ACTIONS = ("adopt", "ignore")


def find_differences(journal: Journal, account: str, broker_portfolio: dict, known_order) -> list[tuple]:
    """Return (kind, key, engine value, broker value) for every difference."""
    differences = []
    broker = {p.get("epic"): float(p.get("qty") or 0) for p in broker_portfolio.get("positions", [])}
    engine = {p.epic: p.qty for p in journal.positions(account) if not p.is_flat}
    for epic in sorted(set(broker) | set(engine)):
        ours, theirs = engine.get(epic, 0.0), broker.get(epic, 0.0)
        if abs(ours - theirs) > 1e-9:
            differences.append(("position", epic, ours, theirs))
    for order in broker_portfolio.get("orders", []):
        key = order.get("client_order_id")
        if key and not known_order(account, key):
            differences.append(("order", key, None, {k: order.get(k) for k in ("epic", "qty", "order_type",
                                                                                   "price", "status")}))
    return differences


def apply_action(journal: Journal, account: str, discrepancy_id: int, action: str, by: str,
                 broker_portfolio: Optional[dict] = None) -> dict:
    """Adopt or ignore one open discrepancy; return it as resolved."""
    if action not in ACTIONS:
        raise InvalidOrder(f"reconcile action must be one of {', '.join(ACTIONS)}, got {action!r}")
    item = next((d for d in journal.discrepancies(account) if d["id"] == discrepancy_id), None)
    if item is None:
        raise InvalidOrder(f"no open discrepancy {discrepancy_id} on account {account}")
    if action == "adopt":
        _adopt(journal, account, item, broker_portfolio or {})
    journal.resolve_discrepancy(discrepancy_id, action)
    journal.audit(account, f"reconcile_{action}", {"id": discrepancy_id, "kind": item["kind"], "key": item["key"],
                                                   "engine": item["engine"], "broker": item["broker"], "by": by})
    log.warning("event=reconcile account=%s id=%s action=%s kind=%s key=%s by=%s",
                account, discrepancy_id, action, item["kind"], item["key"], by)
    return {**item, "resolution": action}


def _adopt(journal: Journal, account: str, item: dict, broker_portfolio: dict) -> None:
    if item["kind"] == "position":
        current = journal.position(account, item["key"])
        row = next((p for p in broker_portfolio.get("positions", []) if p.get("epic") == item["key"]), {})
        qty = float(item["broker"] or 0.0)
        avg = float(row.get("avg_price") or current.avg_price or 0.0) if qty else 0.0
        journal.set_position(account, Position(item["key"], qty, avg, current.realized_pnl))
    elif item["kind"] == "order":
        data = {**item["broker"], "client_order_id": item["key"], "account": account, "source": "external",
                "epic": item["broker"].get("epic") or "?", "qty": item["broker"].get("qty") or 0.0}
        order = BaseOrder.from_dict({k: v for k, v in data.items() if v is not None})
        journal.save_order(order)
