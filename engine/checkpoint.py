"""WAL checkpoints off the hot path.

SQLite checkpoints a WAL database automatically every 1000 pages, inside whichever commit
crosses the line, and a checkpoint fsyncs: a latency spike in the middle of an order. The
owner turns automatic checkpoints off and runs ``Checkpointer``: a daemon thread with its
own connection that checkpoints (PASSIVE: it never blocks the writer) on a timer.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

INTERVAL_S = 1.0


class Checkpointer:
    """Checkpoint one SQLite WAL database every ``interval`` seconds until stopped."""

    def __init__(self, path: Path, interval: float = INTERVAL_S):
        self.path = str(path)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def start(self) -> "Checkpointer":
        """Start checkpointing."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current checkpoint."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.OperationalError:
                    pass  # busy now: the next beat will do it
        finally:
            db.close()
