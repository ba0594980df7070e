"""The paper broker's own record, in SQLite: what a real broker keeps on its servers.

It survives a worker crash, so that after a restart the paper broker still knows
every order it took and every fill it made, and can answer status queries the way a
real broker would.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Optional

import msgspec

from maotrade.matching import PaperBook, Quote
from maotrade.order import BaseOrder, BrokerOrder
from maotrade.positions import Position

# The record is written on every turn that trades: msgspec writes the same JSON several times faster.
_dumps = msgspec.json.Encoder().encode

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (client_order_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class PaperStore:
    """Load and save one paper account's book and orders."""

    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A simulated broker: surviving a killed process is the point, power loss is not, so
        # no fsync (not even at WAL checkpoints, which would stall a reply).
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(SCHEMA)

    def load(self, book: PaperBook) -> dict[str, BrokerOrder]:
        """Fill ``book`` from disk; return every order the broker has ever taken."""
        orders = {row[0]: BrokerOrder.from_dict(json.loads(row[1]))
                  for row in self.db.execute("SELECT client_order_id, data FROM orders")}
        raw = self._get("book")
        if raw:
            state = json.loads(raw)
            book.balance = state["balance"]
            book.exec_seq = state["exec_seq"]
            book.commission_paid = state.get("commission_paid", 0.0)
            book.positions = {e: Position(**p) for e, p in state["positions"].items()}
            book.stops = state["stops"]
            book.working = {k: orders[k] for k in state["working"] if k in orders}
        return orders

    def load_prices(self) -> dict[str, float]:
        """Return the last mid price of each instrument, to continue the walk."""
        raw = self._get("prices")
        return json.loads(raw) if raw else {}

    def save(self, book: PaperBook, orders: list[BaseOrder], prices: Optional[dict] = None,
             replay: Optional[dict] = None) -> None:
        """Write the book, the given orders (and the replay position) in one transaction."""
        state = {"balance": book.balance, "exec_seq": book.exec_seq,
                 "commission_paid": book.commission_paid,
                 "positions": {e: vars(p) for e, p in book.positions.items()},
                 "stops": book.stops, "working": list(book.working)}
        with self.db:
            self.db.execute("BEGIN")
            self._put("book", _dumps(state).decode())
            if prices is not None:
                self._put("prices", json.dumps(prices))
            if replay is not None:
                self._put("replay", json.dumps(replay))
            self.db.executemany(
                "INSERT OR REPLACE INTO orders (client_order_id, data) VALUES (?, ?)",
                [(o.client_order_id, _dumps(o.to_dict()).decode()) for o in orders])

    def load_replay(self) -> dict:
        """Return the replay position: ``{"file", "cursor", "finished"}`` (empty if none)."""
        raw = self._get("replay")
        return json.loads(raw) if raw else {}

    def save_prices(self, prices: dict) -> None:
        """Remember the last mid prices."""
        self._put("prices", json.dumps(prices))

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def _get(self, key: str) -> Optional[str]:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _put(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def quote_of(mid: float, spread: float, time_ms: int) -> Quote:
    """Return the quote around ``mid`` with a relative ``spread``."""
    return Quote(bid=mid * (1 - spread / 2), ask=mid * (1 + spread / 2), time=time_ms)
