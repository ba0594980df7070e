"""Pure parts of the Kite broker: tags, order parameters, states, errors, market hours on
an injected clock, rate limits on a fake clock, the sealed token hand-over; and the
historical API through the real kiteconnect against the local server."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
import struct

import pytest
import requests
from kiteconnect import KiteConnect, KiteTicker
from kiteconnect import exceptions as kex

from account_managers.kite import KiteAccountManager
from account_managers.kite import parsing as P
from account_managers.kite.hours import MarketHours
from account_managers.kite.instruments import InstrumentCache
from account_managers.kite.session import read_token, token_path, write_token
from account_managers.kite.store import KiteStore
from account_managers.kite.throttle import ORDERS, RateLimiter
from maotrade.errors import AuthenticationError, BrokerUnavailable, InvalidOrder, TemporaryError
from maotrade.order import BaseOrder
from tests.kite.conftest import kite_document

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def _order(**fields) -> BaseOrder:
    base = {"client_order_id": "c1", "account": "801", "epic": "INFY", "epicBroker": "NSE:INFY", "qty": 5}
    return BaseOrder(**{**base, **fields})


# -- tags ----------------------------------------------------------------------------------
def test_tag_is_twenty_characters_deterministic_and_tells_legs_apart():
    parent = "strat-" + "x" * 24  # 30 characters, the longest parent id
    tags = {P.tag_for(parent), P.tag_for(parent + "/SL"), P.tag_for(parent + "/TP")}
    assert len(tags) == 3 and all(len(t) == 20 and t.isalnum() for t in tags)
    assert P.tag_for(parent) == P.tag_for(parent)


def test_store_refuses_a_tag_taken_by_another_order(tmp_path):
    store = KiteStore(tmp_path / "k.sqlite")
    store.link_tag("mtabc", "order-1", "regular")
    store.link_tag("mtabc", "order-1", "regular")  # the same order again is fine
    with pytest.raises(ValueError, match="order-1"):
        store.link_tag("mtabc", "order-2", "regular")
    store.set_order_id("mtabc", "2500001")
    store.close()
    again = KiteStore(tmp_path / "k.sqlite")
    assert again.owner_of_order_id("2500001") == "order-1" and again.variety_of("order-1") == "regular"


# -- order parameters ------------------------------------------------------------------------
def test_order_types_map_to_kite():
    market = P.order_params(_order(), "NSE:INFY", "MIS", "regular")
    assert market == {"variety": "regular", "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
                      "quantity": 5, "product": "MIS", "validity": "DAY", "tag": P.tag_for("c1"),
                      "order_type": "MARKET"}
    limit = P.order_params(_order(qty=-5, order_type="LIMIT", price=1510.0, time_in_force="IOC"),
                           "NSE:INFY", "CNC", "amo")
    assert (limit["transaction_type"], limit["order_type"], limit["price"], limit["validity"], limit["variety"]) == \
        ("SELL", "LIMIT", 1510.0, "IOC", "amo")
    stop = P.order_params(_order(qty=-5, order_type="STOP", price=1480.0), "NSE:INFY", "NRML", "regular")
    assert (stop["order_type"], stop["trigger_price"]) == ("SL-M", 1480.0) and "price" not in stop
    stop_limit = P.order_params(_order(qty=-5, order_type="STOP", price=1480.0), "NSE:INFY", "MIS", "regular",
                                stop_limit_offset=0.01)
    assert (stop_limit["order_type"], stop_limit["trigger_price"], stop_limit["price"]) == ("SL", 1480.0, 1465.2)


def test_prices_and_triggers_go_on_the_tick():
    limit = P.order_params(_order(qty=-5, order_type="LIMIT", price=1496.997), "NSE:INFY", "MIS", "regular")
    stop = P.order_params(_order(order_type="STOP", price=1503.02), "NSE:INFY", "MIS", "regular")
    assert (limit["price"], stop["trigger_price"]) == (1497.0, 1503.0)
    assert P.modify_params(_order(order_type="LIMIT", price=1499.93)) == {"price": 1499.95}
    assert P.modify_params(_order(order_type="STOP", price=60.12), tick_size=0.1) == {"trigger_price": 60.1}


def test_server_refuses_a_price_off_the_tick_as_kite_does(kite_server):
    kite = KiteConnect(kite_server.api_key, access_token=kite_server.issue_access_token(), root=kite_server.api_root)
    with pytest.raises(kex.InputException, match="multiple of tick size"):
        kite.place_order("regular", "NSE", "INFY", "BUY", 1, "MIS", "LIMIT", price=1496.997)
    order_id = kite.place_order("regular", "NSE", "INFY", "BUY", 1, "MIS", "LIMIT", price=1400.05)
    with pytest.raises(kex.InputException, match="multiple of tick size"):
        kite.modify_order("regular", order_id, price=1400.02)


@pytest.mark.parametrize("fields, message", [
    ({"qty": 2.5}, "whole quantities"),
    ({"time_in_force": "FOK"}, "FOK is not offered"),
])
def test_orders_kite_cannot_take_are_refused(fields, message):
    with pytest.raises(InvalidOrder, match=message):
        P.order_params(_order(**fields), "NSE:INFY", "MIS", "regular")


def test_broker_instrument_must_name_its_exchange():
    with pytest.raises(InvalidOrder, match="EXCHANGE:TRADINGSYMBOL"):
        P.split_epic("INFY")


def test_statuses_and_unknown_status():
    assert P.kite_status({"status": "TRIGGER PENDING"}) == "ACCEPTED"
    assert P.kite_status({"status": "AMO REQ RECEIVED"}) == "ACCEPTED"
    assert P.kite_status({"status": "COMPLETE"}) == "FILLED"
    with pytest.raises(Exception, match="unknown status"):
        P.kite_status({"status": "SOMETHING NEW", "order_id": "1"})


def test_trade_becomes_a_fill_keyed_by_trade_id_in_exchange_time():
    fill = P.fill_from_trade({"trade_id": "10000001", "quantity": 3, "average_price": 1500.5,
                              "fill_timestamp": dt.datetime(2024, 1, 2, 9, 30, 0)})
    assert (fill.exec_id, fill.qty, fill.price) == ("10000001", 3.0, 1500.5)
    assert fill.time == int(dt.datetime(2024, 1, 2, 9, 30, tzinfo=IST).timestamp() * 1000)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("exc, kind", [
    (kex.TokenException("Incorrect `api_key` or `access_token`."), P.TokenExpired),
    (kex.PermissionException("no"), AuthenticationError),
    (kex.InputException("Invalid `tradingsymbol`."), InvalidOrder),
    (kex.OrderException("Insufficient funds"), InvalidOrder),
    (kex.NetworkException("OMS down"), BrokerUnavailable),
    (kex.GeneralException("500"), BrokerUnavailable),
    (requests.ConnectionError("refused"), BrokerUnavailable),
])
def test_kite_errors_are_translated_by_error_type(exc, kind):
    translated = P.translate_error(exc, "Kite place c1")
    assert isinstance(translated, kind) and translated.__class__ is not Exception
    assert "Kite place c1" in str(translated)


# -- market hours on an injected clock -----------------------------------------------------------
def _hours(when: dt.datetime, **kw) -> MarketHours:
    return MarketHours("09:15", "15:30", "Asia/Kolkata", [0, 1, 2, 3, 4], clock=lambda: when.timestamp(), **kw)


def test_market_hours_boundaries_weekends_and_holidays():
    monday = dt.datetime(2024, 1, 8, tzinfo=IST)
    assert "outside market hours 09:15-15:30" in _hours(monday.replace(hour=9, minute=14, second=59)).closed_reason()
    assert _hours(monday.replace(hour=9, minute=15)).is_open()
    assert _hours(monday.replace(hour=15, minute=29, second=59)).is_open()
    assert not _hours(monday.replace(hour=15, minute=30)).is_open()
    assert "Saturdays" in _hours(dt.datetime(2024, 1, 6, 11, 0, tzinfo=IST)).closed_reason()
    assert "holiday" in _hours(monday.replace(hour=11), holidays=["2024-01-08"]).closed_reason()
    # 04:00 UTC is 09:30 in Kolkata: the exchange's zone decides, not the machine's.
    assert _hours(dt.datetime(2024, 1, 8, 4, 0, tzinfo=dt.timezone.utc)).is_open()


# -- rate limits on a fake clock ------------------------------------------------------------------
def test_rate_limiter_waits_for_a_slot_and_refuses_past_its_budget():
    now = [0.0]
    slept = []
    limiter = RateLimiter({ORDERS: 10}, clock=lambda: now[0],
                          sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    for _ in range(10):
        assert limiter.acquire(ORDERS, 0) == 0
    assert limiter.acquire(ORDERS, 2.0) == pytest.approx(1.0)  # the 11th waits for the window
    for _ in range(9):
        limiter.acquire(ORDERS, 0)
    with pytest.raises(TemporaryError, match="orders rate limit"):
        limiter.acquire(ORDERS, 0.0)


def test_a_slot_is_dated_again_when_its_answer_comes_back():
    now = [0.0]
    limiter = RateLimiter({ORDERS: 1}, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    with limiter.slot(ORDERS, 0):
        now[0] = 0.4  # the request took 0.4 s: it may have reached Kite only now
    now[0] = 1.2
    assert limiter.acquire(ORDERS, 5.0) == pytest.approx(0.2)  # free 1 s after the answer, not the send


# -- token hand-over -------------------------------------------------------------------------------
def test_token_file_is_sealed_by_the_api_secret(tmp_path):
    path = token_path(tmp_path, "801")
    write_token(path, "secret-one", "access-123456")
    assert b"access-123456" not in path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_token(path, "secret-one") == "access-123456"
    assert read_token(path, "another-secret") is None
    assert read_token(tmp_path / "missing.token", "secret-one") is None


def test_login_with_a_used_request_token_is_refused(kite_server, tmp_path):
    document = kite_document(kite_server)
    request_token = kite_server.issue_request_token()
    KiteAccountManager.login_with_request_token(document, request_token, [tmp_path])
    with pytest.raises(P.TokenExpired, match="Token is invalid or has expired"):
        KiteAccountManager.login_with_request_token(document, request_token, [tmp_path])


def test_login_with_a_wrong_secret_fails_the_checksum(kite_server, tmp_path):
    document = kite_document(kite_server)
    document["accountConfig"]["api_secret"] = "not-the-secret"
    with pytest.raises(AuthenticationError, match="checksum"):
        KiteAccountManager.login_with_request_token(document, kite_server.issue_request_token(), [tmp_path])


# -- historical candles -----------------------------------------------------------------------------
def test_historical_candles_become_bars(kite_server, tmp_path):
    document = kite_document(kite_server)
    document["runtime"] = {"data_dir": str(tmp_path)}
    manager = KiteAccountManager(document, None, None)
    manager.kite.set_access_token(document["accountConfig"]["access_token"])
    manager._load_instruments()
    start = dt.datetime(2024, 1, 8, 9, 15)
    bars = manager.fetch_history("INFY", "NSE:INFY", 60, start, start + dt.timedelta(minutes=5))
    assert [b["date"] for b in bars] == [int((start.replace(tzinfo=IST) + dt.timedelta(minutes=i)).timestamp() * 1000)
                                         for i in range(5)]
    assert all(b["epic"] == "INFY" and b["time_frame"] == 60 and b["completed"] for b in bars)
    with pytest.raises(InvalidOrder, match="not offered"):
        manager.fetch_history("INFY", "NSE:INFY", 7, start, start)


# -- wire formats of the local server, read by the real library ------------------------------------
@pytest.mark.parametrize("mode, size", [("ltp", 8), ("quote", 44), ("full", 184)])
def test_server_tick_packets_parse_in_the_real_kiteticker(kite_server, mode, size):
    kite_server.set_price("NSE:INFY", 1512.35, volume=40)
    stamp = 1_796_000_000
    packet = kite_server.call(kite_server._packet, 408065, mode, stamp)
    assert len(packet) == size
    frame = struct.pack(">HH", 1, len(packet)) + packet
    [tick] = KiteTicker("k", "t")._parse_binary(frame)
    assert (tick["mode"], tick["instrument_token"], tick["last_price"]) == (mode, 408065, 1512.35)
    if mode != "ltp":
        assert tick["volume_traded"] == 40
    if mode == "full":
        assert len(tick["depth"]["buy"]) == 5 and P.tick_price(tick)[2] == stamp * 1000


def test_instruments_are_fetched_once_a_day(tmp_path):
    rows = [{"exchange": "NSE", "tradingsymbol": "INFY", "instrument_token": 408065, "tick_size": 0.05,
             "lot_size": 1}]
    calls = []
    cache = InstrumentCache(tmp_path / "instruments.json", "http://kite", 24)
    fetch = lambda: calls.append(1) or rows
    assert cache.load(fetch)["NSE:INFY"]["token"] == 408065
    assert InstrumentCache(tmp_path / "instruments.json", "http://kite", 24).load(fetch)["NSE:INFY"]["token"] == 408065
    assert len(calls) == 1
    InstrumentCache(tmp_path / "instruments.json", "http://other-root", 24).load(fetch)
    assert len(calls) == 2


def test_history_pages_respect_kites_span_per_interval():
    start = int(dt.datetime(2024, 1, 1, tzinfo=IST).timestamp() * 1000)
    end = start + 150 * 86400 * 1000
    pages = P.history_pages(start, end, "minute")
    assert [(b - a).days for a, b in pages] == [60, 60, 30]
    assert pages[0][0] == dt.datetime(2024, 1, 1) and P.history_interval(86400) == "day"


def test_every_setting_is_documented():
    page = (Path(__file__).resolve().parents[2] / "docs" / "brokers" / "kite.md").read_text()
    fields = {**KiteAccountManager.settings_model.model_fields, **KiteAccountManager.account_settings_model.model_fields}
    missing = [name for name in fields if f"`{name}`" not in page]
    assert not missing, f"docs/brokers/kite.md does not describe {missing}"
