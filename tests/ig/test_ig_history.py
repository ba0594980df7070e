"""IG price history: the IG worker pages through GET /prices/{epic} (v3) of the simulator with
the real ``requests``, within the weekly historical-data allowance IG reports."""
from __future__ import annotations

import pytest

from maotrade.backtest.store import parse_day
from tests.ig.conftest import EPICS, ig_document
from tests.ig.simulator import history_mid
from tests.kit import WorkerHarness

HOUR = 3600
MONDAY = parse_day("20240101")  # 2024-01-01 is a Monday
WEEK_MS = 7 * 86_400_000


@pytest.fixture
def paged_worker(sim, tmp_path):
    with WorkerHarness(ig_document(sim, history_page_size=50), tmp_path) as harness:
        harness.wait_type("connection", state="connected", timeout=20)
        yield harness


def _history(worker, request_id: str, start: int, end: int, time_frame: int = HOUR) -> list[dict]:
    mark = worker.request("history_request", request={"request_id": request_id, "epic": "EURUSD",
                                                      "epicBroker": EPICS["EURUSD"], "time_frame": time_frame,
                                                      "start": start, "end": end})
    parts = []
    while True:
        part = worker.wait_type("history_data", since=mark, request_id=request_id, timeout=20)
        mark = worker.received.index(part) + 1
        parts.append(part)
        if part["done"]:
            return parts


def test_a_week_of_hours_arrives_in_pages_tiling_the_span(sim, paged_worker):
    parts = _history(paged_worker, "w1", MONDAY, MONDAY + WEEK_MS)
    bars = [b for p in parts for b in p["bars"]]
    assert len(bars) == 5 * 24  # the weekend has no prices
    assert [p["error"] for p in parts if p.get("error")] == []
    assert parts[0]["start"] == MONDAY and parts[-1]["end"] == MONDAY + WEEK_MS
    assert all(a["end"] == b["start"] for a, b in zip(parts, parts[1:]))
    assert [q["pageNumber"] for q in sim.price_requests] == ["1", "2", "3"]
    assert sim.price_requests[0]["resolution"] == "HOUR" and sim.price_requests[0]["to"] == "2024-01-07T23:59:59"
    first = bars[0]
    assert (first["epic"], first["date"]) == ("EURUSD", MONDAY)
    base = sim.markets[EPICS["EURUSD"]].open_mid
    assert first["open"] == pytest.approx(history_mid(EPICS["EURUSD"], base, MONDAY // 1000), abs=1e-6)
    assert parts[-1]["allowance"] == {"remaining": 10_000 - 120, "total": 10_000,
                                      "reset_s": parts[-1]["allowance"]["reset_s"]}


def test_the_weekly_allowance_is_respected_and_what_fits_is_kept(sim, paged_worker):
    sim.history_allowance = 130
    parts = _history(paged_worker, "w2", MONDAY, MONDAY + 2 * WEEK_MS)
    received = [b for p in parts for b in p["bars"]]
    assert len(received) == 100  # two pages of 50; the third would overdraw the allowance
    assert len(sim.price_requests) == 2  # it was never asked for: IG never had to refuse
    error = parts[-1]["error"]
    assert error.startswith("IG weekly historical data allowance: 30 of 130 points left, resets in")
    covered = [(p["start"], p["end"]) for p in parts if p["start"] is not None]
    assert covered[0][0] == MONDAY and covered[-1][1] == received[-1]["date"] + HOUR * 1000


def test_a_resolution_ig_lacks_is_refused_before_asking(sim, paged_worker):
    [part] = _history(paged_worker, "w3", MONDAY, MONDAY + WEEK_MS, time_frame=7)
    assert part["done"] and part["error"].startswith("IG has no 7s resolution")
    assert sim.price_requests == []
