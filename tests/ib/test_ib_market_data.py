"""Ticks, 5-second real-time bars aggregated to the requested frame, history."""
from maotrade.messages import EngineToWorker as In


def _bars(worker, since, epic, time_frame):
    return [m for m in worker.received[since:] if m.get("type") == "market_data"
            and m["epic"] == epic and m["time_frame"] == time_frame]


def test_realtime_bars_aggregate_to_one_minute(ib_worker, fake_tws):
    mark = ib_worker.request(In.MARKET_DATA_REQUEST, request={
        "action": "subscribe", "epic": "SPY", "epicBroker": "SPY-USD-STK-SMART", "time_frame": 60})
    ib_worker.wait_type("market_data_response", since=mark, ok=True)
    first = ib_worker.wait_type("market_data", since=mark, epic="SPY", time_frame=60, timeout=10)
    second = ib_worker.wait_for(lambda m: m.get("type") == "market_data" and m.get("time_frame") == 60
                                and m["date"] > first["date"], since=mark, what="second minute bar")
    for bar in (first, second):
        assert bar["completed"] is True and bar["date"] % 60_000 == 0
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (450.0, 450.02, 449.98, 450.01)
    assert second["date"] - first["date"] == 60_000
    assert second["volume"] == 12 * 10  # twelve 5-second bars of 10


def test_ticks_make_one_second_bars_and_unsubscribe_stops_them(ib_worker, fake_tws):
    request = {"action": "subscribe", "epic": "EURUSD", "time_frame": 1}
    mark = ib_worker.request(In.MARKET_DATA_REQUEST, request=request)
    ib_worker.wait_type("market_data_response", since=mark, ok=True)
    bar = ib_worker.wait_type("market_data", since=mark, epic="EURUSD", time_frame=1, timeout=5)
    assert bar["completed"] and 1.08 < bar["low"] <= bar["close"] <= bar["high"] < 1.09
    assert fake_tws.streams() == [("ticks", "EUR")]
    mark = ib_worker.request(In.MARKET_DATA_REQUEST, request=dict(request, action="unsubscribe"))
    ib_worker.wait_type("market_data_response", since=mark, ok=True)
    from tests.kit import wait_until
    wait_until(lambda: fake_tws.streams() == [], what="tick stream cancelled at TWS")


def test_history_then_live_and_unknown_instrument_refused(ib_worker, fake_tws):
    mark = ib_worker.request(In.MARKET_DATA_REQUEST, request={
        "action": "history", "epic": "AAPL", "time_frame": 60, "count": 5})
    ib_worker.wait_type("market_data_response", since=mark, ok=True)
    ib_worker.wait_for(lambda m: len(_bars(ib_worker, mark, "AAPL", 60)) >= 5, what="5 history bars")
    bars = _bars(ib_worker, mark, "AAPL", 60)
    assert [b["date"] for b in bars] == sorted(b["date"] for b in bars)
    assert all(b["completed"] and b["date"] % 60_000 == 0 for b in bars)
    mark = ib_worker.request(In.MARKET_DATA_REQUEST, request={
        "action": "subscribe", "epic": "NOPE", "time_frame": 60})
    error = ib_worker.wait_type("error", since=mark)
    assert "NOPE" in error["reason"] and "security definition" in error["reason"]
