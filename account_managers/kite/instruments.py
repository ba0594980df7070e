"""The instruments dump (``EXCHANGE:TRADINGSYMBOL`` -> instrument token), cached for the day.

Kite publishes the dump once a day; it is several megabytes, so it is fetched at most once
per trading day (IST) per API root and kept as JSON under the data dir.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Callable

from account_managers.kite.parsing import IST, instrument_tokens


class InstrumentCache:
    """The day's instrument tokens, from the cache file or from ``fetch`` (the dump's rows)."""

    def __init__(self, path: Path, api_root: str, max_age_hours: float):
        self.path = Path(path)
        self.api_root = api_root
        self.max_age = max_age_hours * 3600

    def load(self, fetch: Callable[[], list]) -> dict[str, dict]:
        """Return ``{EXCHANGE:SYMBOL: {token, tick_size, lot_size}}``; fetch if stale (blocking)."""
        today = dt.datetime.now(IST).date().isoformat()
        try:
            cached = json.loads(self.path.read_text())
            if (cached.get("date") == today and cached.get("root") == self.api_root
                    and time.time() - cached.get("fetched", 0) < self.max_age):
                return cached["instruments"]
        except (OSError, ValueError, KeyError):
            pass  # no cache, or a damaged one: fetch
        instruments = instrument_tokens(fetch())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps({"date": today, "fetched": time.time(), "root": self.api_root,
                                       "instruments": instruments}))
        partial.replace(self.path)
        return instruments
