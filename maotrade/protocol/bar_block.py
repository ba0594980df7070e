"""Blocks of bars: many bars of one stream packed into one bus message.

A worker streaming fast sends its consecutive bars of one (epic, time frame) as one
``market_data_block``: a small header (account, epic, time frame, whether the bars are
completed) and ``bars``, the bars as one msgpack array of rows
``[date, open, high, low, close, volume]``. The engine routes a block by its header and
forwards its ``bars`` bytes unchanged; it decodes the rows once, typed, to check them and
to learn the last price. Clients get ordinary ``market_data`` maps back (``bar_maps``).
"""
from __future__ import annotations

from typing import Any, Iterable

import msgspec

from maotrade.errors import ProtocolError
from maotrade.protocol.to_client import MarketData, MarketDataBlock

#: a block holds at most this many bars (a longer run is split into several blocks).
MAX_BLOCK_BARS = 5000


class BarRow(msgspec.Struct, array_like=True, gc=False):
    """One bar of a block, as the row ``[date, open, high, low, close, volume]``."""

    date: int
    open: float
    high: float
    low: float
    close: float
    volume: float


_encoder = msgspec.msgpack.Encoder()
_typed_rows = msgspec.msgpack.Decoder(list[BarRow])
_plain_rows = msgspec.msgpack.Decoder(list)


def pack_rows(rows: Iterable[tuple]) -> bytes:
    """Encode rows ``(date, open, high, low, close, volume)`` as a block's ``bars``."""
    return _encoder.encode(rows if isinstance(rows, list) else list(rows))


def row_count(bars: bytes) -> int:
    """The number of rows in ``bars``, read from its msgpack array header (0 if it is none)."""
    if not bars:
        return 0
    head = bars[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(bars) >= 3:
        return int.from_bytes(bars[1:3], "big")
    if head == 0xDD and len(bars) >= 5:
        return int.from_bytes(bars[1:5], "big")
    return 0


def decode_rows(bars: bytes) -> tuple[list[BarRow], list[str]]:
    """Decode a block's ``bars``: the rows that are well formed, and a one-line reason for
    each one that is not (a bad row is refused alone; the others are kept, in order).

    Raises ``ProtocolError`` when ``bars`` is not an array at all."""
    try:
        return _typed_rows.decode(bars), []
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError, TypeError):
        pass  # something in it is bad: check row by row
    try:
        raw = _plain_rows.decode(bars)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError, TypeError) as exc:
        raise ProtocolError(f"market_data_block: `bars` is not an array of rows ({exc})") from None
    rows, reasons = [], []
    for index, item in enumerate(raw):
        try:
            rows.append(msgspec.convert(item, BarRow))
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            reasons.append(f"market_data_block: row {index} is not [date, open, high, low, close, volume] "
                           f"({exc})")
    return rows, reasons


def bar_maps(block: dict[str, Any], rows: list[BarRow] | None = None) -> list[dict[str, Any]]:
    """The bars of ``block`` (a ``market_data_block`` map) as ``market_data`` maps, in order."""
    header = {"type": MarketData.TYPE, "v": block.get("v", 1), "account": block["account"], "epic": block["epic"],
              "time_frame": block["time_frame"], "completed": block["completed"]}
    if rows is None:
        rows, _ = decode_rows(block["bars"])
    return [{**header, "date": r.date, "open": r.open, "high": r.high, "low": r.low, "close": r.close,
             "volume": r.volume} for r in rows]


def expand_blocks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with every ``market_data_block`` replaced by its bars as ``market_data``
    maps, in order; ``ProtocolError`` if a block is malformed (bad rows are left out)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        if msg.get("type") != MarketDataBlock.TYPE:
            out.append(msg)
            continue
        try:
            out.extend(bar_maps(msg))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"malformed market_data_block ({type(exc).__name__}: {exc})") from None
    return out
