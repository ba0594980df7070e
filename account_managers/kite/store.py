"""What a Kite worker must remember across restarts, in one SQLite file per account.

- the tag each client order id travels under (Kite's ``tag`` holds 20 characters, our ids
  up to 33), and the Kite order id it got, so an update after a restart finds its order;
- our orders with their fills, so a trade reported again is recognised by its trade id
  and never counted twice.

Each change commits at once.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Optional

from maotrade.order import BaseOrder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tags (tag TEXT PRIMARY KEY, client_order_id TEXT NOT NULL UNIQUE,
                                 order_id TEXT NOT NULL DEFAULT '', variety TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (client_order_id TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


class KiteStore:
    """Tags, Kite order ids and orders of one Kite account."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def link_tag(self, tag: str, client_order_id: str, variety: str) -> None:
        """Remember that ``tag`` stands for ``client_order_id``, sent as ``variety`` (the
        variety of its latest placement); refuse a tag already taken by another order."""
        row = self._db.execute("SELECT client_order_id FROM tags WHERE tag = ?", (tag,)).fetchone()
        if row is not None and row[0] != client_order_id:
            raise ValueError(f"tag {tag} already stands for order {row[0]}, not {client_order_id}")
        self._db.execute("INSERT INTO tags (tag, client_order_id, variety) VALUES (?, ?, ?) "
                         "ON CONFLICT (tag) DO UPDATE SET variety = excluded.variety",
                         (tag, client_order_id, variety))

    def set_order_id(self, tag: str, order_id: str) -> None:
        """Remember the Kite order id of a tagged order."""
        self._db.execute("UPDATE tags SET order_id = ? WHERE tag = ?", (str(order_id), tag))

    def owner_of_tag(self, tag: str) -> Optional[str]:
        """The client order id ``tag`` stands for, or None."""
        row = self._db.execute("SELECT client_order_id FROM tags WHERE tag = ?", (tag,)).fetchone()
        return row[0] if row else None

    def variety_of(self, client_order_id: str) -> str:
        """The variety (regular, amo) an order was placed as; 'regular' if unknown."""
        row = self._db.execute("SELECT variety FROM tags WHERE client_order_id = ?", (client_order_id,)).fetchone()
        return row[0] if row else "regular"

    def owner_of_order_id(self, order_id: str) -> Optional[str]:
        """The client order id of a Kite order id, or None."""
        row = self._db.execute("SELECT client_order_id FROM tags WHERE order_id = ? AND order_id != ''",
                               (str(order_id),)).fetchone()
        return row[0] if row else None

    def save_order(self, order: BaseOrder) -> None:
        """Write an order and its fills."""
        self._db.execute("INSERT OR REPLACE INTO orders (client_order_id, data) VALUES (?, ?)",
                         (order.client_order_id, json.dumps(order.to_dict())))

    def load_orders(self) -> dict[str, BaseOrder]:
        """Every order this account sent, by client order id."""
        return {key: BaseOrder.from_dict(json.loads(data))
                for key, data in self._db.execute("SELECT client_order_id, data FROM orders")}

    def close(self) -> None:
        """Close the database."""
        self._db.close()
