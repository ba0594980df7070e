"""Historical bars from CSV or Parquet files, checked and normalized.

A file holds one instrument's bars, one per row, with a time column (``date``, ``time``,
``timestamp`` or ``datetime``: epoch seconds or milliseconds, or ISO 8601 text, UTC when
no offset is given) and ``open``, ``high``, ``low``, ``close`` (``volume`` optional);
column names are case-insensitive; CSV may be gzip-compressed (``.csv.gz``). Several
files are merged in time order. Bars finer than the requested time frame are aggregated
into it.

``sample_files()`` are the synthetic one-minute bars shipped with the package (EURUSD and
GBPUSD, two weeks from 2024-01-01), so a first backtest needs no download.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from maotrade.bars import BarBuilder, make_bar
from maotrade.errors import MAOTradeError
from maotrade.protocol import PROTOCOL_VERSION, to_client

MARKET_DATA = to_client.MarketData.TYPE

DEFAULT_ACCOUNT = "backtest"  # the account id a backtest's strategy sees unless told otherwise

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "data"
SAMPLE_TIME_FRAME = 60
TIME_COLUMNS = ("date", "time", "timestamp", "datetime")
PRICE_COLUMNS = ("open", "high", "low", "close")
# Epoch values above this are milliseconds (1e11 s is the year 5138).
MS_THRESHOLD = 100_000_000_000


class DataError(MAOTradeError, ValueError):
    """A data file is missing, unreadable or holds a bar that makes no sense."""


def file_digest(path) -> str:
    """SHA-256 of a file's bytes, in hex (results.json records it for every data file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_files() -> dict[str, Path]:
    """The sample data shipped with the package: epic -> file of one-minute bars."""
    return {path.name.split("-")[0]: path for path in sorted(SAMPLE_DIR.glob("*-1m.csv.gz"))}


def load_bars(paths: Iterable, epic: str, time_frame: int) -> list[dict]:
    """Return the bars of every file in ``paths``, merged, as bars of ``time_frame`` seconds
    (each also carries ``type``, ``v`` and ``account`` of the message a strategy receives).

    Raise ``DataError`` naming the file and row of the first bad value, or the date that
    appears twice.
    """
    if int(time_frame) <= 0:
        raise DataError(f"time frame must be a positive number of seconds, got {time_frame}")
    rows: list[tuple] = []
    for path in paths:
        rows.extend(_read(Path(path)))
    if not rows:
        raise DataError("no bars in the data files")
    rows.sort(key=lambda r: r[0])
    for previous, current in zip(rows, rows[1:]):
        if previous[0] == current[0]:
            stamp = datetime.fromtimestamp(current[0] / 1000, timezone.utc).isoformat()
            raise DataError(f"two bars at {stamp} ({current[0]} ms): files overlap or repeat a row")
    span = int(time_frame) * 1000
    if all(r[0] % span == 0 for r in rows):
        bars = [make_bar(epic, time_frame, *r) for r in rows]
    else:
        builder = BarBuilder(epic, time_frame)
        bars = []
        for row in rows:
            bars.extend(builder.update_bar(*row))
        if builder.current is not None:
            bars.append({**builder.current, "completed": True})
    # Shaped as the market data message a strategy gets, so a backtest need not copy them.
    return [{"type": MARKET_DATA, "v": PROTOCOL_VERSION, "account": DEFAULT_ACCOUNT, **bar} for bar in bars]


def _read(path: Path) -> list[tuple]:
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        columns = _parquet_columns(path)
    else:
        columns = _csv_columns(path)
    return _rows(path, columns)


def _csv_columns(path: Path) -> dict[str, list]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file (a header row is needed)")
        names = [h.strip().lower() for h in header]
        data = list(zip(*reader)) or [()] * len(names)
    if len(data) != len(names):
        raise DataError(f"{path}: rows do not have the {len(names)} columns of the header")
    return dict(zip(names, (list(c) for c in data)))


def _parquet_columns(path: Path) -> dict[str, list]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'maotrade[backtest]')") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    return {name.lower(): table.column(name).to_pylist() for name in table.column_names}


def _rows(path: Path, columns: dict[str, list]) -> list[tuple]:
    time_name = next((n for n in TIME_COLUMNS if n in columns), None)
    if time_name is None:
        raise DataError(f"{path}: no time column (one of {', '.join(TIME_COLUMNS)})")
    for name in PRICE_COLUMNS:
        if name not in columns:
            raise DataError(f"{path}: no {name!r} column")
    times = columns[time_name]
    opens, highs, lows, closes = (columns[n] for n in PRICE_COLUMNS)
    volumes = columns.get("volume") or [0.0] * len(times)
    rows = []
    for index in range(len(times)):
        line = index + 2  # 1-based, after the header
        try:
            date = _to_ms(times[index])
            o, h, l, c = (float(opens[index]), float(highs[index]), float(lows[index]), float(closes[index]))
            v = float(volumes[index] or 0.0)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path} row {line}: {exc}") from None
        if not all(math.isfinite(x) and x > 0 for x in (o, h, l, c)):
            raise DataError(f"{path} row {line}: prices must be positive numbers, got {o}, {h}, {l}, {c}")
        if h < max(o, c, l) or l > min(o, c, h):
            raise DataError(f"{path} row {line}: high {h} / low {l} do not contain open {o} and close {c}")
        rows.append((date, o, h, l, c, v))
    return rows


def _to_ms(value) -> int:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(round(moment.timestamp() * 1000))
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"time {text!r} is neither epoch seconds/ms nor ISO 8601") from None
            return _to_ms(moment)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"time {value!r} is not a valid epoch time")
    return int(number) if number >= MS_THRESHOLD else int(round(number * 1000))
