"""IB history downloads: the IB worker asks the fake TWS with the real ib_insync's
``reqHistoricalData``, one span at a time, within IB's pacing rules."""
from __future__ import annotations

from maotrade.backtest.store import parse_day
from tests.ib.fake_tws import history_price
from tests.kit import IB_MAPPING as MAPPING, WorkerHarness, ib_document

DAY_MS = 86_400_000
MONDAY = parse_day("20240101")


def _download(worker, request_id: str, epic: str, time_frame: int, start: int, end: int,
              timeout: float = 30) -> list[dict]:
    mark = worker.request("history_request", request={"request_id": request_id, "epic": epic,
                                                      "epicBroker": MAPPING[epic], "time_frame": time_frame,
                                                      "start": start, "end": end})
    parts = []
    while True:
        part = worker.wait_type("history_data", since=mark, request_id=request_id, timeout=timeout)
        mark = worker.received.index(part) + 1
        parts.append(part)
        if part["done"]:
            return parts


def test_eight_days_of_minutes_in_paced_one_day_requests(ib_worker, fake_tws):
    parts = _download(ib_worker, "d1", "AAPL", 60, MONDAY, MONDAY + 8 * DAY_MS)
    assert [p.get("error") for p in parts] == [None] * len(parts)
    bars = [b for p in parts for b in p["bars"]]
    assert len(bars) == 8 * 1440 and len({b["date"] for b in bars}) == len(bars)
    assert bars[0]["date"] == MONDAY and bars[-1]["date"] == MONDAY + 8 * DAY_MS - 60_000
    queries = [q for q in fake_tws.history_queries if q[0] == "AAPL"]
    assert len(queries) == 8 and {q[2] for q in queries} == {"86400 S"} and {q[3] for q in queries} == {"1 min"}
    assert queries[0][1] == "20240102 00:00:00 UTC"  # endDateTime as ib_insync formats it
    assert fake_tws.pacing_violations == 0  # the sixth request within 2 s waited
    aapl = next(i for i in fake_tws.instruments if i.symbol == "AAPL")
    assert bars[30]["open"] == history_price(aapl, (MONDAY + 30 * 60_000) // 1000)


def test_pacing_ignored_earns_error_162_and_what_arrived_is_kept(fake_tws, tmp_path):
    document = ib_document(fake_tws.port, historical_same_contract_2s=50)
    with WorkerHarness(document, tmp_path) as worker:
        worker.wait_type("connection", state="connected", timeout=20)
        parts = _download(worker, "d2", "AAPL", 60, MONDAY, MONDAY + 8 * DAY_MS)
    assert fake_tws.pacing_violations == 1
    assert "pacing violation" in parts[-1]["error"] and parts[-1]["error"].startswith("IB history of AAPL failed: IB 162")
    kept = [p for p in parts if not p.get("error")]
    assert len(kept) == 6 and all(len(p["bars"]) == 1440 for p in kept)


def test_no_data_before_the_first_day_is_an_empty_span_not_an_error(ib_worker, fake_tws):
    before = parse_day("20190101")
    [part] = _download(ib_worker, "d3", "AAPL", 3600, before, before + 5 * DAY_MS)
    assert part["done"] and part.get("error") is None and part["bars"] == []
    assert (part["start"], part["end"]) == (before, before + 5 * DAY_MS)


def test_unknown_instrument_and_bar_size_are_refused_in_one_line(ib_worker):
    [part] = _download(ib_worker, "d4", "NOPE", 60, MONDAY, MONDAY + DAY_MS)
    assert part["error"].startswith("unknown instrument 'NOPE'")
    [part] = _download(ib_worker, "d5", "AAPL", 7, MONDAY, MONDAY + DAY_MS)
    assert part["error"].startswith("IB has no 7s bars")
