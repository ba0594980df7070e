"""The local store of downloaded history: one Parquet file per account, instrument and time frame.

Layout: ``{root}/{account}/{epic}/{time_frame}.parquet`` (names percent-encoded where
they hold anything but letters, digits, ``.``, ``_`` and ``-``). Columns: ``date``
(int64, epoch ms of the bar's start), ``open``, ``high``, ``low``, ``close``, ``volume``
(float64), sorted by date, each date once. The file's metadata records the *coverage*:
the time spans (epoch ms, end exclusive) the broker was asked for and answered in full,
bars or none (a weekend is covered and has no bars). A download asks only for what the
coverage lacks. Files are replaced atomically: a crash leaves the old file or the new one.

Backtests read the store with ``load_stored_bars`` (what ``maotrade backtest`` does
without ``--data``).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import quote, unquote

from maotrade.backtest.data import DataError
from maotrade.bars import BarBuilder, make_bar

COVERAGE_KEY = b"maotrade.coverage"
COLUMNS = ("date", "open", "high", "low", "close", "volume")
Span = tuple[int, int]


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataError("the history store needs pyarrow (pip install 'maotrade[backtest]')") from None
    return pyarrow


def _name(text: str) -> str:
    """A file name for an account or instrument code (percent-encoded, never a relative step)."""
    name = quote(str(text), safe="")
    if not name or name in (".", ".."):
        raise DataError(f"{text!r} cannot name a stored series")
    return name


# -- spans ---------------------------------------------------------------------------------------
def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Return ``spans`` sorted with overlapping and touching ones joined."""
    out: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in spans if e > s):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def missing_spans(covered: Iterable[Span], start: int, end: int) -> list[Span]:
    """The parts of ``[start, end)`` that ``covered`` does not cover."""
    gaps, cursor = [], start
    for span_start, span_end in merge_spans(covered):
        if span_end <= cursor:
            continue
        if span_start >= end:
            break
        if span_start > cursor:
            gaps.append((cursor, min(span_start, end)))
        cursor = max(cursor, span_end)
    if cursor < end:
        gaps.append((cursor, end))
    return gaps


# -- dates ---------------------------------------------------------------------------------------
def parse_day(text: str) -> int:
    """Epoch ms of ``YYYYMMDD``, ``YYYY-MM-DD`` or an ISO 8601 time (UTC unless it says)."""
    raw = str(text).strip()
    try:
        if re.fullmatch(r"\d{8}", raw):
            moment = datetime.strptime(raw, "%Y%m%d")
        else:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"date {raw!r} is not YYYYMMDD, YYYY-MM-DD or ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def parse_timerange(text: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    """``START-END`` as epoch ms (``YYYYMMDD-YYYYMMDD``; either side may be empty).

    The range holds bars dated from START 00:00 UTC up to, not including, END 00:00 UTC.
    """
    if not text:
        return None, None
    start_text, sep, end_text = str(text).partition("-")
    if not sep or (start_text and not re.fullmatch(r"\d{8}", start_text)) or \
            (end_text and not re.fullmatch(r"\d{8}", end_text)):
        raise DataError(f"time range {text!r} is not YYYYMMDD-YYYYMMDD (either side may be left empty)")
    start = parse_day(start_text) if start_text else None
    end = parse_day(end_text) if end_text else None
    if start is not None and end is not None and end <= start:
        raise DataError(f"time range {text!r} ends before it starts")
    return start, end


def format_ms(value: int) -> str:
    """An epoch-ms time as ``YYYY-MM-DD HH:MM`` UTC."""
    return datetime.fromtimestamp(value / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def select_timerange(bars: list[dict], start: Optional[int], end: Optional[int]) -> list[dict]:
    """The bars of ``bars`` dated in ``[start, end)`` (None: unbounded)."""
    return [b for b in bars if (start is None or b["date"] >= start) and (end is None or b["date"] < end)]


# -- the store -----------------------------------------------------------------------------------
@dataclass
class StoredSeries:
    """What the store holds for one account, instrument and time frame."""

    account: str
    epic: str
    time_frame: int
    path: Path
    bars: int
    first: Optional[int]
    last: Optional[int]
    coverage: list[Span]


class HistoryStore:
    """Downloaded bars under ``root`` (normally ``{data dir}/history``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, account: str, epic: str, time_frame: int) -> Path:
        """The Parquet file of one series."""
        return self.root / _name(account) / _name(epic) / f"{int(time_frame)}.parquet"

    def coverage(self, account: str, epic: str, time_frame: int) -> list[Span]:
        """The spans of one series already fetched in full."""
        path = self.path(account, epic, time_frame)
        if not path.exists():
            return []
        return self._read_coverage(path)

    def missing(self, account: str, epic: str, time_frame: int, start: int, end: int) -> list[Span]:
        """The parts of ``[start, end)`` a download still has to fetch."""
        return missing_spans(self.coverage(account, epic, time_frame), start, end)

    def add(self, account: str, epic: str, time_frame: int, bars: list[dict], start: int, end: int) -> None:
        """Merge ``bars`` (which cover ``[start, end)`` in full) into the series, atomically."""
        pa = _pyarrow()
        path = self.path(account, epic, time_frame)
        rows: dict[int, tuple] = {}
        covered: list[Span] = []
        if path.exists():
            table = pa.parquet.read_table(path)
            columns = [table.column(name).to_pylist() for name in COLUMNS]
            rows = {row[0]: row for row in zip(*columns)}
            covered = self._read_coverage(path)
        span = int(time_frame) * 1000
        for bar in bars:
            if bar["date"] % span or not start <= bar["date"] < end:
                raise DataError(f"bar at {format_ms(bar['date'])} is not a {time_frame}s bar inside "
                                f"{format_ms(start)} - {format_ms(end)}")
            rows[int(bar["date"])] = (int(bar["date"]), float(bar["open"]), float(bar["high"]),
                                      float(bar["low"]), float(bar["close"]), float(bar.get("volume") or 0.0))
        ordered = [rows[d] for d in sorted(rows)]
        arrays = [pa.array([r[i] for r in ordered], type=pa.int64() if i == 0 else pa.float64())
                  for i in range(len(COLUMNS))]
        coverage = merge_spans([*covered, (start, end)])
        table = pa.Table.from_arrays(arrays, names=list(COLUMNS)).replace_schema_metadata(
            {COVERAGE_KEY: json.dumps(coverage).encode()})
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".parquet.tmp")
        pa.parquet.write_table(table, temporary)
        os.replace(temporary, path)

    def read(self, account: str, epic: str, time_frame: int, start: Optional[int] = None,
             end: Optional[int] = None) -> list[tuple]:
        """Rows ``(date, open, high, low, close, volume)`` of one series dated in ``[start, end)``."""
        pa = _pyarrow()
        path = self.path(account, epic, time_frame)
        if not path.exists():
            return []
        table = pa.parquet.read_table(path)
        rows = list(zip(*(table.column(name).to_pylist() for name in COLUMNS)))
        return [r for r in rows if (start is None or r[0] >= start) and (end is None or r[0] < end)]

    def series(self) -> list[StoredSeries]:
        """Every series in the store, by account, instrument and time frame."""
        pa = _pyarrow()
        out = []
        for path in sorted(self.root.glob("*/*/*.parquet")):
            try:
                time_frame = int(path.stem)
            except ValueError:
                continue
            meta = pa.parquet.read_metadata(path)
            dates = pa.parquet.read_table(path, columns=["date"]).column("date")
            out.append(StoredSeries(account=unquote(path.parent.parent.name), epic=unquote(path.parent.name),
                                    time_frame=time_frame, path=path, bars=meta.num_rows,
                                    first=dates[0].as_py() if len(dates) else None,
                                    last=dates[-1].as_py() if len(dates) else None,
                                    coverage=self._read_coverage(path)))
        return out

    @staticmethod
    def _read_coverage(path: Path) -> list[Span]:
        pa = _pyarrow()
        metadata = pa.parquet.read_schema(path).metadata or {}
        try:
            return [tuple(span) for span in json.loads(metadata.get(COVERAGE_KEY, b"[]"))]
        except ValueError:
            raise DataError(f"{path}: its coverage record is unreadable; delete the file to download again") from None


def load_stored_bars(root: Path, epic: str, time_frame: int, start: Optional[int] = None,
                     end: Optional[int] = None, account: Optional[str] = None) -> list[dict]:
    """Bars of ``epic`` at ``time_frame`` seconds from the store, dated in ``[start, end)``.

    Uses the series of that time frame, or else the coarsest stored finer one that divides
    it (aggregated). ``account`` picks among accounts that hold the instrument; without it
    the instrument must be stored under one account only. Raise ``DataError`` saying what
    to download when nothing fits.
    """
    store = HistoryStore(root)
    candidates = [s for s in store.series() if s.epic == epic and (account is None or s.account == account)
                  and s.bars and int(time_frame) % s.time_frame == 0]
    if not candidates:
        raise DataError(f"no stored history of {epic} at {time_frame}s (or a finer time frame dividing it)"
                        f"{' for account ' + account if account else ''}: run `maotrade download` first, "
                        f"or give --data")
    accounts = sorted({s.account for s in candidates})
    if len(accounts) > 1:
        raise DataError(f"{epic} is stored for several accounts ({', '.join(accounts)}): say which one")
    chosen = max(candidates, key=lambda s: s.time_frame)
    rows = store.read(chosen.account, epic, chosen.time_frame, start, end)
    if not rows:
        raise DataError(f"stored history of {epic} ({format_ms(chosen.first)} - {format_ms(chosen.last)}) "
                        f"has no bars in the requested time range")
    if chosen.time_frame == int(time_frame):
        return [make_bar(epic, time_frame, *row) for row in rows]
    builder = BarBuilder(epic, time_frame)
    bars: list[dict] = []
    for row in rows:
        bars.extend(builder.update_bar(*row))
    if builder.current is not None:
        bars.append({**builder.current, "completed": True})
    return bars
