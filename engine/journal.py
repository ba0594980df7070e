"""The engine's journal and account state in one SQLite file (WAL).

The engine is the only writer. An order is written here before any worker sees it;
each fill is written once, keyed by (account, exec_id), in the same transaction as the
position it moves. With WAL and ``synchronous=NORMAL`` a committed transaction survives
a killed process; ``durability="full"`` also survives power loss, at an fsync per commit.

Group commit: inside ``group()`` every write joins one transaction, committed when the
group ends; the engine opens one per loop turn and sends nothing of the turn before it
has committed. Each unit that must be all-or-nothing (an order with its legs; fills with
their position and order) is a savepoint inside it, so a failed unit undoes itself only.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import msgspec

from engine.checkpoint import Checkpointer
from engine.sqlite_tx import transaction
from maotrade.order import BaseOrder, Fill, OrderStatus
from maotrade.positions import Position

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    account TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    epic TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    strategy TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (account, client_order_id)
);
CREATE INDEX IF NOT EXISTS orders_status ON orders (account, status);
CREATE TABLE IF NOT EXISTS fills (
    account TEXT NOT NULL,
    exec_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    epic TEXT NOT NULL,
    qty REAL NOT NULL,
    price REAL NOT NULL,
    commission REAL NOT NULL,
    time INTEGER NOT NULL,
    external INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, exec_id)
);
CREATE TABLE IF NOT EXISTS positions (
    account TEXT NOT NULL,
    epic TEXT NOT NULL,
    qty REAL NOT NULL,
    avg_price REAL NOT NULL,
    realized_pnl REAL NOT NULL,
    PRIMARY KEY (account, epic)
);
CREATE TABLE IF NOT EXISTS balances (
    account TEXT NOT NULL,
    time INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS balances_account ON balances (account, time);
CREATE TABLE IF NOT EXISTS discrepancies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    engine TEXT NOT NULL,
    broker TEXT NOT NULL,
    found INTEGER NOT NULL,
    resolution TEXT NOT NULL DEFAULT '',
    resolved INTEGER
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    account TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


def now_ms() -> int:
    """Epoch milliseconds."""
    return int(time.time() * 1000)


class Journal:
    """Durable orders, fills, positions and balance history of every account."""

    def __init__(self, path: Path, durability: str = "normal"):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        # Checkpoints (and their fsync) run on a timer in another thread, not inside an order.
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.checkpointer = Checkpointer(path).start()
        self._grouped = False
        # (account, epic) -> the position as written: the order path reads it on every fill
        # and risk check. This connection is the journal's only writer; a rollback clears it.
        self._positions: dict[tuple[str, str], Position] = {}
        self.commits = 0  # transactions that wrote something (a group counts once), for tests and benchmarks

    # -- transactions -----------------------------------------------------------
    @property
    def in_group(self) -> bool:
        """True inside ``group()``: what is written now is not yet committed."""
        return self._grouped

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """One transaction for every write until the block ends (nesting joins the outer one).

        It commits when the block ends normally; if the block raises, everything in it
        rolls back and the exception goes on: the caller must then not send anything the
        block produced.
        """
        if self._grouped:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._grouped = True
        changes = self.db.total_changes
        try:
            yield
        except BaseException:
            self._grouped = False
            self._positions.clear()
            self.db.execute("ROLLBACK")
            raise
        self._grouped = False
        try:
            self.db.execute("COMMIT")
        except BaseException:
            self._positions.clear()
            with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may leave it open
                self.db.execute("ROLLBACK")
            raise
        if self.db.total_changes != changes:
            self.commits += 1

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """All or nothing: a transaction of its own, or a savepoint inside a ``group``."""
        if not self._grouped:
            try:
                with transaction(self.db):
                    yield
            except BaseException:
                self._positions.clear()
                raise
            self.commits += 1
            return
        self.db.execute("SAVEPOINT unit")
        try:
            yield
        except BaseException:
            self._positions.clear()
            self.db.execute("ROLLBACK TO unit")
            self.db.execute("RELEASE unit")
            raise
        self.db.execute("RELEASE unit")

    # -- orders -----------------------------------------------------------------
    def insert_orders(self, orders: list[BaseOrder], strategy: str = "") -> bool:
        """Journal new order intents (a parent and its bracket legs) in one transaction.

        Return False, and write nothing, if the first one's client order id exists already.
        """
        if len(orders) == 1 and self._grouped:  # one statement is all or nothing by itself
            return self._insert_order(orders[0], strategy)
        with self._atomic():
            for index, order in enumerate(orders):
                if not self._insert_order(order, strategy) and index == 0:
                    return False
        return True

    def _insert_order(self, order: BaseOrder, strategy: str) -> bool:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO orders (account, client_order_id, epic, status, source, strategy,"
            " created, updated, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order.account, order.client_order_id, order.epic, order.status, order.source, strategy,
             order.created, order.updated, _order_json(order)))
        return cur.rowcount == 1

    def save_order(self, order: BaseOrder, strategy: str = "") -> None:
        """Write an order's current state (insert if new)."""
        self.db.execute(
            "INSERT INTO orders (account, client_order_id, epic, status, source, strategy, created,"
            " updated, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, client_order_id)"
            " DO UPDATE SET status = excluded.status, updated = excluded.updated, data = excluded.data",
            (order.account, order.client_order_id, order.epic, order.status, order.source, strategy,
             order.created, order.updated, _order_json(order)))

    def get_order(self, account: str, client_order_id: str) -> Optional[BaseOrder]:
        """Return one order, or None."""
        row = self.db.execute("SELECT data FROM orders WHERE account = ? AND client_order_id = ?",
                              (account, client_order_id)).fetchone()
        return self._with_fills([BaseOrder.from_dict(json.loads(row[0]))])[0] if row else None

    def order_strategy(self, account: str, client_order_id: str) -> str:
        """Return the name of the strategy that placed an order ('' if none)."""
        row = self.db.execute("SELECT strategy FROM orders WHERE account = ? AND client_order_id = ?",
                              (account, client_order_id)).fetchone()
        return row[0] if row else ""

    def open_orders(self, account: Optional[str] = None) -> list[BaseOrder]:
        """Return every order not in a final state (optionally of one account)."""
        done = tuple(OrderStatus.DONE)
        marks = ",".join("?" * len(done))
        sql = f"SELECT data FROM orders WHERE status NOT IN ({marks})"
        args: list = list(done)
        if account is not None:
            sql += " AND account = ?"
            args.append(account)
        return self._with_fills([BaseOrder.from_dict(json.loads(r[0])) for r in self.db.execute(sql, args)])

    def list_orders(self, account: Optional[str] = None, epic: Optional[str] = None,
                    status: Optional[str] = None, source: Optional[str] = None,
                    since: Optional[int] = None, until: Optional[int] = None,
                    limit: int = 1000) -> list[BaseOrder]:
        """Return orders matching every filter given, newest first."""
        clauses, args = [], []
        for column, value in (("account", account), ("epic", epic), ("status", status), ("source", source)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            clauses.append("created >= ?")
            args.append(since)
        if until is not None:
            clauses.append("created < ?")
            args.append(until)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.execute(f"SELECT data FROM orders {where} ORDER BY created DESC LIMIT ?",
                               [*args, int(limit)])
        return self._with_fills([BaseOrder.from_dict(json.loads(r[0])) for r in rows])

    def _with_fills(self, orders: list[BaseOrder]) -> list[BaseOrder]:
        """Attach each order's recorded fills (unsigned, as ``Fill.to_dict``)."""
        traded = [o for o in orders if o.filled_qty]
        by_key: dict[tuple[str, str], list] = {}
        for account in {o.account for o in traded}:
            ids = [o.client_order_id for o in traded if o.account == account]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows = self.db.execute(
                    "SELECT client_order_id, exec_id, qty, price, time, commission FROM fills WHERE account = ?"
                    f" AND client_order_id IN ({','.join('?' * len(chunk))}) ORDER BY rowid", [account, *chunk])
                for key, exec_id, qty, price, at, commission in rows:
                    by_key.setdefault((account, key), []).append(
                        {"exec_id": exec_id, "qty": abs(qty), "price": price, "time": at, "commission": commission})
        for order in traded:
            order.fills = by_key.get((order.account, order.client_order_id), [])
        return orders

    # -- fills and positions ---------------------------------------------------------
    def apply_fills(self, order: BaseOrder, fills: list[Fill], external: bool = False,
                    apply: Optional[Callable[[Fill], object]] = None) -> list[tuple[Fill, float]]:
        """Record fills, move the position and save the order, in one transaction.

        A fill whose (account, exec_id) is recorded already is skipped: this key is the
        engine's one duplicate check. ``apply(fill)`` (the order's state machine) runs for
        each new fill inside the transaction. Returns the (fill, realized P&L) pairs that
        were new.
        """
        applied = []
        before = (order.status, order.filled_qty, order.avg_fill_price, list(order.fills), order.updated)
        try:
            self._insert_fills(order, fills, external, apply, applied)
        except BaseException:
            # The transaction rolled back: so does the order, whatever the state machine did.
            order.status, order.filled_qty, order.avg_fill_price, order.fills, order.updated = before
            raise
        return applied

    def _insert_fills(self, order: BaseOrder, fills: list[Fill], external: bool,
                      apply: Optional[Callable[[Fill], object]], applied: list) -> None:
        with self._atomic():
            position = None
            for fill in fills:
                signed = abs(fill.qty) if order.qty > 0 else -abs(fill.qty)
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO fills (account, exec_id, client_order_id, epic, qty, price,"
                    " commission, time, external) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (order.account, fill.exec_id, order.client_order_id, order.epic, signed, fill.price,
                     fill.commission, fill.time, int(external)))
                if cur.rowcount == 0:
                    continue  # seen before (or without an exec id): never counted twice
                if apply is not None:
                    apply(fill)
                if position is None:
                    position = self.position(order.account, order.epic)
                applied.append((fill, position.apply_fill(signed, fill.price)))
            if position is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO positions (account, epic, qty, avg_price, realized_pnl)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (order.account, order.epic, position.qty, position.avg_price, position.realized_pnl))
                self._positions[(order.account, order.epic)] = position
            self.save_order(order)

    def fills(self, account: str, client_order_id: Optional[str] = None) -> list[dict]:
        """Return recorded fills, oldest first."""
        sql = "SELECT exec_id, client_order_id, epic, qty, price, commission, time, external FROM fills WHERE account = ?"
        args: list = [account]
        if client_order_id:
            sql += " AND client_order_id = ?"
            args.append(client_order_id)
        keys = ("exec_id", "client_order_id", "epic", "qty", "price", "commission", "time", "external")
        return [dict(zip(keys, row)) for row in self.db.execute(sql + " ORDER BY rowid", args)]

    def position(self, account: str, epic: str) -> Position:
        """Return the engine's position in one instrument (flat if none); a copy the caller
        may change."""
        known = self._positions.get((account, epic))
        if known is None:
            row = self.db.execute("SELECT qty, avg_price, realized_pnl FROM positions WHERE account = ? AND epic = ?",
                                  (account, epic)).fetchone()
            known = self._positions[(account, epic)] = Position(epic, *row) if row else Position(epic)
        return Position(epic, known.qty, known.avg_price, known.realized_pnl)

    def positions(self, account: str) -> list[Position]:
        """Return every position of an account, flat ones included (they carry realized P&L)."""
        return [Position(*row) for row in self.db.execute(
            "SELECT epic, qty, avg_price, realized_pnl FROM positions WHERE account = ? ORDER BY epic",
            (account,))]

    # -- balances, discrepancies, audit ------------------------------------------------
    def record_balance(self, account: str, info: dict) -> None:
        """Append one account-info snapshot to the balance history."""
        self.db.execute("INSERT INTO balances (account, time, data) VALUES (?, ?, ?)",
                        (account, now_ms(), json.dumps(info)))

    def last_balance(self, account: str) -> Optional[dict]:
        """Return the newest account-info snapshot."""
        row = self.db.execute("SELECT data FROM balances WHERE account = ? ORDER BY time DESC, rowid DESC LIMIT 1",
                              (account,)).fetchone()
        return json.loads(row[0]) if row else None

    def balance_history(self, account: str, since: int = 0, max_points: int = 2000) -> list[dict]:
        """Return ``{time, balance, equity}`` snapshots from ``since`` (epoch ms), oldest first.

        A long history is thinned evenly to ``max_points``; the newest snapshot is always kept.
        """
        rows = self.db.execute("SELECT time, data FROM balances WHERE account = ? AND time >= ? "
                               "ORDER BY time, rowid", (account, since)).fetchall()
        if len(rows) > max_points:
            step = len(rows) / max_points
            rows = [rows[int(i * step)] for i in range(max_points - 1)] + [rows[-1]]
        out = []
        for time_ms, data in rows:
            info = json.loads(data)
            out.append({"time": time_ms, "balance": info.get("balance"), "equity": info.get("equity")})
        return out

    def recent_fills(self, account: str, limit: int = 100) -> list[dict]:
        """Return the account's last ``limit`` fills, oldest first (as ``fills``)."""
        keys = ("exec_id", "client_order_id", "epic", "qty", "price", "commission", "time", "external")
        rows = self.db.execute("SELECT exec_id, client_order_id, epic, qty, price, commission, time, external "
                               "FROM fills WHERE account = ? ORDER BY rowid DESC LIMIT ?", (account, limit)).fetchall()
        return [dict(zip(keys, row)) for row in reversed(rows)]

    def record_discrepancy(self, account: str, kind: str, key: str, engine: object, broker: object) -> int:
        """Record a difference between engine and broker unless the same one is open; return its id."""
        engine_s, broker_s = json.dumps(engine, sort_keys=True), json.dumps(broker, sort_keys=True)
        row = self.db.execute(
            "SELECT id FROM discrepancies WHERE account = ? AND kind = ? AND key = ? AND engine = ?"
            " AND broker = ? AND resolved IS NULL", (account, kind, key, engine_s, broker_s)).fetchone()
        if row:
            return row[0]
        cur = self.db.execute(
            "INSERT INTO discrepancies (account, kind, key, engine, broker, found) VALUES (?, ?, ?, ?, ?, ?)",
            (account, kind, key, engine_s, broker_s, now_ms()))
        return cur.lastrowid

    def discrepancies(self, account: Optional[str] = None, open_only: bool = True) -> list[dict]:
        """Return recorded discrepancies."""
        sql = "SELECT id, account, kind, key, engine, broker, found, resolution, resolved FROM discrepancies"
        clauses, args = [], []
        if account is not None:
            clauses.append("account = ?")
            args.append(account)
        if open_only:
            clauses.append("resolved IS NULL")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        keys = ("id", "account", "kind", "key", "engine", "broker", "found", "resolution", "resolved")
        out = []
        for row in self.db.execute(sql + " ORDER BY id", args):
            item = dict(zip(keys, row))
            item["engine"], item["broker"] = json.loads(item["engine"]), json.loads(item["broker"])
            out.append(item)
        return out

    def resolve_discrepancy(self, discrepancy_id: int, resolution: str) -> None:
        """Mark a discrepancy adopted or ignored."""
        self.db.execute("UPDATE discrepancies SET resolution = ?, resolved = ? WHERE id = ?",
                        (resolution, now_ms(), discrepancy_id))

    def set_position(self, account: str, position: Position) -> None:
        """Overwrite a position (used when adopting the broker's view)."""
        self.db.execute("INSERT OR REPLACE INTO positions (account, epic, qty, avg_price, realized_pnl)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (account, position.epic, position.qty, position.avg_price, position.realized_pnl))
        self._positions[(account, position.epic)] = Position(position.epic, position.qty, position.avg_price,
                                                             position.realized_pnl)

    def audit(self, account: str, action: str, detail: dict) -> None:
        """Append one line to the audit log."""
        self.db.execute("INSERT INTO audit (time, account, action, detail) VALUES (?, ?, ?, ?)",
                        (now_ms(), account, action, json.dumps(detail, sort_keys=True)))

    def audit_log(self, account: Optional[str] = None) -> list[dict]:
        """Return the audit log, oldest first."""
        sql, args = "SELECT time, account, action, detail FROM audit", []
        if account is not None:
            sql, args = sql + " WHERE account = ?", [account]
        return [{"time": t, "account": a, "action": act, "detail": json.loads(d)}
                for t, a, act, d in self.db.execute(sql + " ORDER BY id", args)]

    def close(self) -> None:
        """Checkpoint and close the file."""
        self.checkpointer.stop()
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.db.close()


_json = msgspec.json.Encoder()


def _order_json(order: BaseOrder) -> str:
    return _json.encode(order.to_dict(with_fills=False)).decode()  # fills live in their own table

