"""What the risk rules must remember across a restart, in ``risk.sqlite`` beside the journal:
kill switch modes, run-time limit overrides and each day's P&L baseline."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Optional

from engine.risk import RiskEngine

SCHEMA = """
CREATE TABLE IF NOT EXISTS kill_switch (scope TEXT PRIMARY KEY, mode TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS overrides (scope TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS day_baseline (account TEXT NOT NULL, day TEXT NOT NULL, pnl REAL NOT NULL,
                                         PRIMARY KEY (account, day));
"""


class RiskState:
    """Kill switch modes, overrides and daily baselines that survive a restart."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._baselines: dict[tuple[str, str], float] = {}

    def load(self, risk: RiskEngine) -> None:
        """Restore kill switch modes and overrides into ``risk``."""
        for scope, mode in self.db.execute("SELECT scope, mode FROM kill_switch"):
            risk.kill[scope] = mode
        for scope, data in self.db.execute("SELECT scope, data FROM overrides"):
            risk.restore_override(scope, json.loads(data))

    def save_kill(self, scope: str, mode: str) -> None:
        """Persist one kill switch mode."""
        self.db.execute("INSERT OR REPLACE INTO kill_switch (scope, mode) VALUES (?, ?)", (scope, mode))

    def save_override(self, scope: str, data: Optional[dict]) -> None:
        """Persist (or with None, drop) one scope's overrides."""
        if data is None:
            self.db.execute("DELETE FROM overrides WHERE scope = ?", (scope,))
        else:
            self.db.execute("INSERT OR REPLACE INTO overrides (scope, data) VALUES (?, ?)",
                            (scope, json.dumps(data, sort_keys=True)))

    def baseline(self, account: str, day: str, current: float) -> float:
        """The account's P&L when ``day`` began for the engine (``current`` if first asked now)."""
        cached = self._baselines.get((account, day))
        if cached is not None:
            return cached
        self.db.execute("INSERT OR IGNORE INTO day_baseline (account, day, pnl) VALUES (?, ?, ?)",
                        (account, day, current))
        value = self.db.execute("SELECT pnl FROM day_baseline WHERE account = ? AND day = ?",
                                (account, day)).fetchone()[0]
        self._baselines[(account, day)] = value
        return value

    def close(self) -> None:
        """Close the file."""
        self.db.close()
