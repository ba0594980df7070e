"""Download history through a running engine into the local store, fetching only what is missing.

The engine passes each ``history_request`` to the account's worker, whose broker
answers in parts (``history_data``); every part says which span it covers in full, so
what arrived before an error (a broker's allowance running out, a dropped session) is
kept and the next download resumes from there.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from maotrade.backtest.data import DataError
from maotrade.backtest.store import HistoryStore, Span, format_ms
from maotrade.client import EngineClient
from maotrade.errors import ProtocolError, TemporaryError
from maotrade.protocol import from_client, to_client

# Bars asked for per request: progress is saved at least this often.
REQUEST_BARS = 50_000
# Seconds without any part before the download gives up (the worker's own limit is 120 s).
PART_TIMEOUT_S = 150.0


@dataclass
class DownloadResult:
    """What one download did."""

    requested: list[Span] = field(default_factory=list)  # the spans that were missing
    bars: int = 0  # bars received and stored
    errors: list[str] = field(default_factory=list)
    allowance: Optional[dict] = None  # the broker's last word on its history quota

    @property
    def complete(self) -> bool:
        """True when every missing span was fetched."""
        return not self.errors


def windows(spans: list[Span], time_frame: int, bars_per_window: int = REQUEST_BARS) -> list[Span]:
    """Cut ``spans`` into request windows of at most ``bars_per_window`` bars."""
    step = int(time_frame) * 1000 * bars_per_window
    out = []
    for start, end in spans:
        cursor = start
        while cursor < end:
            out.append((cursor, min(end, cursor + step)))
            cursor += step
    return out


def completed_end(end: int, time_frame: int) -> int:
    """``end`` moved back, if need be, to the end of the last completed bar: a bar still
    forming is not history yet."""
    span = int(time_frame) * 1000
    return min(end, int(time.time() * 1000) // span * span)


def download(client: EngineClient, store: HistoryStore, account: str, epic: str, time_frame: int,
             start: int, end: int, progress: Optional[Callable[[int], None]] = None,
             on_allowance: Optional[Callable[[dict], None]] = None) -> DownloadResult:
    """Fetch the bars of ``[start, end)`` the store lacks; ``progress(ms)`` is told of each
    span covered, ``on_allowance(allowance)`` of the broker's quota when it reports one."""
    end = completed_end(end, time_frame)
    result = DownloadResult(requested=store.missing(account, epic, time_frame, start, end) if end > start else [])
    ids = itertools.count(1)
    parts = _Parts(client)
    for window_start, window_end in windows(result.requested, time_frame):
        request_id = f"dl{next(ids)}"
        client.send(from_client.HistoryRequest(account=account, request_id=request_id, epic=epic,
                                               time_frame=int(time_frame), start=window_start, end=window_end))
        error = _receive(parts, store, account, epic, time_frame, request_id, result, progress, on_allowance)
        if error:
            result.errors.append(f"{format_ms(window_start)} - {format_ms(window_end)}: {error}")
            break  # what follows would meet the same refusal (allowance, session, instrument)
    return result


def _receive(parts, store, account, epic, time_frame, request_id, result, progress, on_allowance) -> str:
    """Collect one request's parts, store them, and return its error ("" when it completed)."""
    bars: list[dict] = []
    spans: list[Span] = []
    try:
        while True:
            part = parts.next(request_id)
            if part.get("allowance"):
                result.allowance = part["allowance"]
                if on_allowance is not None:
                    on_allowance(part["allowance"])
            if part.get("start") is not None and part.get("end") is not None and not part.get("error"):
                bars.extend(part.get("bars") or [])
                spans.append((int(part["start"]), int(part["end"])))
                if progress is not None:
                    progress(int(part["end"]) - int(part["start"]))
            if part.get("done"):
                return str(part.get("error") or "")
    except (TemporaryError, ProtocolError) as exc:
        return str(exc)
    finally:
        _store(store, account, epic, time_frame, bars, spans)
        result.bars += len(bars)


def _store(store: HistoryStore, account: str, epic: str, time_frame: int, bars: list[dict],
           spans: list[Span]) -> None:
    """Save what arrived: the parts tile one window from its start, so they join into one span."""
    if not spans:
        return
    start, end = spans[0][0], spans[-1][1]
    for (_, previous_end), (next_start, _) in zip(spans, spans[1:]):
        if next_start != previous_end:
            raise DataError(f"the broker's parts left a gap at {format_ms(previous_end)}")
    store.add(account, epic, time_frame, bars, start, end)


class _Parts:
    """Reads ``history_data`` parts off the client in order, one at a time."""

    def __init__(self, client: EngineClient):
        self.client = client
        self.waiting: list[dict] = []

    def next(self, request_id: str) -> dict:
        """The next part of ``request_id``; raise on silence or on the engine's refusal."""
        deadline = time.monotonic() + PART_TIMEOUT_S
        while True:
            while self.waiting:
                item = self.waiting.pop(0)
                kind = item.get("type")
                if kind == to_client.HistoryData.TYPE and item.get("request_id") == request_id:
                    return item
                if kind == to_client.Error.TYPE and item.get("request") == from_client.HistoryRequest.TYPE:
                    raise ProtocolError(f"engine refused the request: {item.get('reason')}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TemporaryError(f"no history from the engine within {PART_TIMEOUT_S:g}s")
            self.waiting = self.client.receive(int(remaining * 1000) or 1)
