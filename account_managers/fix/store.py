"""What a FIX session must remember across restarts, in one SQLite file per session.

- sequence numbers: the next MsgSeqNum we send and the next we expect;
- every application message we sent, by MsgSeqNum, so a ResendRequest can be honoured;
- our orders (with their fills) and the ClOrdIDs that point at them, so execution
  reports resent after a restart are recognised and never fill an order twice.

Each change commits at once: a sequence number that went on the wire is never reused.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterator, Optional

from maotrade.order import BaseOrder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS session (id INTEGER PRIMARY KEY CHECK (id = 1),
                                    next_out INTEGER NOT NULL, next_in INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outgoing (seq INTEGER PRIMARY KEY, msg_type TEXT NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS orders (client_order_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cl_ord_ids (cl_ord_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL,
                                       purpose TEXT NOT NULL);
"""


class SessionStore:
    """Sequence numbers, sent messages and orders of one FIX session (sender-target)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO session (id, next_out, next_in) VALUES (1, 1, 1)")
        self.next_out, self.next_in = self._db.execute(
            "SELECT next_out, next_in FROM session WHERE id = 1").fetchone()

    # -- sequence numbers -----------------------------------------------------------
    def set_next_in(self, value: int) -> None:
        """Remember the next MsgSeqNum expected from the counterparty."""
        self.next_in = value
        self._db.execute("UPDATE session SET next_in = ? WHERE id = 1", (value,))

    def record_sent(self, seq: int, msg_type: str, raw: Optional[bytes]) -> None:
        """Advance the outgoing number past ``seq``; keep ``raw`` if it may be resent."""
        with self._db:
            self._db.execute("BEGIN")
            self.next_out = seq + 1
            self._db.execute("UPDATE session SET next_out = ? WHERE id = 1", (self.next_out,))
            if raw is not None:
                self._db.execute("INSERT OR REPLACE INTO outgoing (seq, msg_type, raw) VALUES (?, ?, ?)",
                                 (seq, msg_type, raw))

    def reset(self) -> None:
        """Start both directions at 1 again and forget sent messages (ResetSeqNumFlag)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE session SET next_out = 1, next_in = 1 WHERE id = 1")
            self._db.execute("DELETE FROM outgoing")
        self.next_out = self.next_in = 1

    def sent_between(self, begin: int, end: int) -> Iterator[tuple[int, str, bytes]]:
        """Yield ``(seq, msg_type, raw)`` of application messages sent in ``[begin, end]``."""
        yield from self._db.execute(
            "SELECT seq, msg_type, raw FROM outgoing WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (begin, end)).fetchall()

    def sent_message(self, seq: int) -> Optional[tuple[str, bytes]]:
        """Return ``(msg_type, raw)`` of the application message sent as ``seq``, if any."""
        row = self._db.execute("SELECT msg_type, raw FROM outgoing WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else (row[0], row[1])

    # -- orders ---------------------------------------------------------------------
    def save_order(self, order: BaseOrder) -> None:
        """Write an order and its fills."""
        self._db.execute("INSERT OR REPLACE INTO orders (client_order_id, data) VALUES (?, ?)",
                         (order.client_order_id, json.dumps(order.to_dict())))

    def load_orders(self) -> dict[str, BaseOrder]:
        """Return every order this session has sent, by client order id."""
        return {key: BaseOrder.from_dict(json.loads(data))
                for key, data in self._db.execute("SELECT client_order_id, data FROM orders")}

    def link_cl_ord_id(self, cl_ord_id: str, client_order_id: str, purpose: str) -> None:
        """Remember that ``cl_ord_id`` (a new, cancel or replace request) is about an order."""
        self._db.execute("INSERT OR REPLACE INTO cl_ord_ids VALUES (?, ?, ?)",
                         (cl_ord_id, client_order_id, purpose))

    def load_cl_ord_ids(self) -> dict[str, tuple[str, str]]:
        """Return ``{cl_ord_id: (client_order_id, purpose)}``."""
        return {row[0]: (row[1], row[2]) for row in self._db.execute("SELECT * FROM cl_ord_ids")}

    def close(self) -> None:
        """Close the database."""
        self._db.close()
