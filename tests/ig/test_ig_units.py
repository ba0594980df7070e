"""Pure pieces of the IG broker: translation tables, throttle, deal bookkeeping, and the
simulator's TLCP field encoding checked with the real client's own parser."""
from __future__ import annotations

import pytest

from account_managers.ig import parsing as P
from account_managers.ig.config import IGAccountSettings
from account_managers.ig.deals import OPEN_MARKET, Batch, DealBook
from account_managers.ig.rest import IGRestClient, IGSession
from account_managers.ig.manager import CONNECT_REQUESTS
from account_managers.ig.throttle import NON_TRADING, TRADING, Throttle, reconnect_pace
from maotrade.errors import ProtocolError, TemporaryError
from maotrade.order import BaseOrder
from tests.ig.tlcp_server import encode_update


def test_deal_reference_is_stable_and_fits_igs_rules():
    assert P.deal_reference("mt-abc_12") == "mt-abc_12"
    long_id = "strategy:alpha/order#0000000000000000000042"
    ref = P.deal_reference(long_id)
    assert ref == P.deal_reference(long_id) and len(ref) <= 30
    assert all(c.isalnum() or c in "-_" for c in ref)
    assert P.deal_reference(long_id[:-1] + "3") != ref


def test_rejected_confirm_keeps_igs_code():
    reason = P.reject_reason({"dealReference": "R1", "reason": "INSUFFICIENT_FUNDS"})
    assert reason == "IG rejected deal R1: INSUFFICIENT_FUNDS (insufficient funds)"
    assert "SOME_NEW_CODE" in P.reject_reason({"reason": "SOME_NEW_CODE"})
    with pytest.raises(ProtocolError, match="dealStatus"):
        P.confirm_outcome({"dealReference": "R1", "dealStatus": "MAYBE"})


def test_garbage_on_the_trade_stream_names_the_field():
    with pytest.raises(ProtocolError, match="CONFIRMS"):
        P.parse_json_field("{not json", "CONFIRMS")
    assert P.parse_json_field(None, "OPU") is None


def test_positions_are_netted_per_epic_and_marked_at_the_closing_side():
    rows = [{"position": {"dealId": "D1", "size": 2, "direction": "BUY", "level": 1.10},
             "market": {"epic": "CS.D.EURUSD.CFD.IP", "bid": 1.12, "offer": 1.13}},
            {"position": {"dealId": "D2", "size": 1, "direction": "BUY", "level": 1.13},
             "market": {"epic": "CS.D.EURUSD.CFD.IP", "bid": 1.12, "offer": 1.13}},
            {"position": {"dealId": "D3", "size": 5, "direction": "SELL", "level": 7500},
             "market": {"epic": "IX.D.FTSE.DAILY.IP", "bid": 7490, "offer": 7491}}]
    out = {p["epic"]: p for p in P.normalize_positions(rows, {"CS.D.EURUSD.CFD.IP": "EURUSD"}.get)}
    eur = out["EURUSD"]
    assert eur["qty"] == 3 and abs(eur["avg_price"] - 1.11) < 1e-12 and eur["market_price"] == 1.12
    assert abs(eur["unrealized_pnl"] - 0.03) < 1e-12 and eur["deals"] == ["D1", "D2"]
    ftse = out[None]
    assert ftse["qty"] == -5 and ftse["market_price"] == 7491 and ftse["unrealized_pnl"] == 45


def test_close_plan_takes_oldest_deals_first_and_refuses_too_much():
    rows = [{"position": {"dealId": "NEW", "size": 2, "direction": "BUY", "createdDateUTC": "2024-02"},
             "market": {"epic": "E"}},
            {"position": {"dealId": "OLD", "size": 1, "direction": "BUY", "createdDateUTC": "2024-01"},
             "market": {"epic": "E"}}]
    assert P.close_plan(rows, "E", -2.5) == [("OLD", 1), ("NEW", 1.5)]
    with pytest.raises(ValueError, match="exceeds the open 3"):
        P.close_plan(rows, "E", -4)
    with pytest.raises(ValueError, match="no open short position"):
        P.close_plan(rows, "E", 1)


def test_chart_bar_is_mid_prices_and_completed_from_cons_end():
    update = {"UTM": "1700000000000", "BID_OPEN": "1.0", "OFR_OPEN": "1.2", "BID_HIGH": "2", "OFR_HIGH": "2.2",
              "BID_LOW": "0.5", "OFR_LOW": "0.7", "BID_CLOSE": "1.5", "OFR_CLOSE": "1.7", "LTV": "12",
              "CONS_END": "1"}
    bar = P.chart_bar("EURUSD", 60, update)
    assert bar == {"epic": "EURUSD", "time_frame": 60, "date": 1700000000000, "open": 1.1, "high": 2.1,
                   "low": 0.6, "close": 1.6, "volume": 12.0, "completed": True}
    assert P.chart_bar("EURUSD", 60, dict(update, CONS_END="0"))["completed"] is False
    assert P.chart_bar("EURUSD", 60, {"UTM": "1"}) is None
    with pytest.raises(ProtocolError, match="BID_OPEN"):
        P.chart_bar("EURUSD", 60, dict(update, BID_OPEN="x"))


def test_order_bodies_follow_igs_rules():
    order = BaseOrder(client_order_id="c1", account="1", epic="EURUSD", qty=-2, stop_loss=1.2)
    body = P.open_position_body(order, "CS.D.EURUSD.CFD.IP", "c1", "GBP", "-")
    assert body["direction"] == "SELL" and body["size"] == 2 and body["forceOpen"] is True
    assert body["dealReference"] == "c1" and body["orderType"] == "MARKET"
    order.stop_loss = None
    assert P.open_position_body(order, "E", "c1", "GBP", "-")["forceOpen"] is False


def test_throttle_spaces_requests_within_the_minute_and_refuses_beyond_budget():
    clock = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    throttle = Throttle(app_non_trading=3, account_trading=2, account_non_trading=2, clock=lambda: clock[0],
                        sleep=sleep)
    assert throttle.acquire(TRADING, 1) == 0 and throttle.acquire(TRADING, 1) == 0
    clock[0] = 10.0
    assert throttle.acquire(TRADING, 60) == 50.0  # waits for the first slot to leave the window
    throttle.acquire(NON_TRADING, 0)
    throttle.acquire(NON_TRADING, 0)
    with pytest.raises(TemporaryError, match="non-trading request allowance"):
        throttle.acquire(NON_TRADING, 5)
    assert slept == [50.0]


def _connect_waits_after_an_outage(probe_interval: float, outage_s: float = 120.0) -> float:
    """Seconds a connection waits for slots after ``outage_s`` of failed login attempts every
    ``probe_interval`` seconds, against IG's default 30 non-trading requests per minute."""
    clock = [0.0]
    throttle = Throttle(app_non_trading=60, account_trading=100, account_non_trading=30, clock=lambda: clock[0],
                        sleep=lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    while clock[0] < outage_s:
        throttle.acquire(NON_TRADING, 60)  # a login the broker answers 503
        clock[0] += probe_interval
    back = clock[0]
    for _ in range(CONNECT_REQUESTS):
        throttle.acquire(NON_TRADING, 120)
    return clock[0] - back


def test_reconnect_attempts_leave_the_connection_its_requests_in_igs_allowance():
    # Probing once a second during an outage keeps the allowance spent: the connection then
    # waits for slots to leave the window after IG is back, one per second.
    assert _connect_waits_after_an_outage(1.0) >= CONNECT_REQUESTS - 1
    pace = reconnect_pace(30, CONNECT_REQUESTS)
    assert pace == 3.0
    assert _connect_waits_after_an_outage(pace) == 0


def test_deal_book_holds_early_confirms_and_applies_each_once():
    book = DealBook()
    book.keep_orphan("R9", {"dealReference": "R9"})
    batch = Batch("c1", OPEN_MARKET)
    assert book.track("R9", batch) == {"dealReference": "R9"}
    assert book.claim("R9") is True and book.claim("R9") is False


@pytest.mark.parametrize("previous,current", [
    (None, ["1.1", "1.2", None, "", "a|b%c", "#", "$", "^x"]),
    (["1.1", "1.2", "3", "4", "5"], ["1.1", "1.2", "3", "9", "5"]),
    (["1", "2", "3"], ["1", "2", "3"]),
    (["1", "2"], [None, ""]),
])
def test_tlcp_field_encoding_decodes_with_the_real_client(previous, current):
    from lightstreamer.client.ls_python_client_haxe import (
        com_lightstreamer_client_internal__ParseTools_ParseTools_Fields_ as parse_tools)
    line = f"U,1,1,{encode_update(previous, current)}"
    decoded = parse_tools.parseUpdate(line)
    values = decoded.values
    for index, value in enumerate(current, start=1):
        field = values.get(index)
        if previous is not None and previous[index - 1] == value:
            assert field.index == 0, f"field {index} should be unchanged in {line}"  # unchanged
        else:
            assert field.params[0] == value, f"field {index} of {line}"


def test_secrets_never_show_in_reprs():
    settings = IGAccountSettings(user="u", password="hunter22", apiKey="k-secret", accountId="A")
    assert "hunter22" not in repr(settings) and "k-secret" not in repr(settings)
    client = IGRestClient("http://x", "u", "hunter22", "k-secret", "A", 1, Throttle(1, 1, 1))
    assert "hunter22" not in repr(client) and "k-secret" not in repr(client)
    assert "cst-value" not in repr(IGSession("cst-value", "xst", "A", "", []))


def test_confirm_status_table_covers_every_request_kind():
    from account_managers.ig import deals
    kinds = {deals.OPEN_MARKET, deals.OPEN_WORKING, deals.CLOSE, deals.AMEND, deals.CANCEL}
    assert set(P.ACCEPTED_EFFECT) == kinds
    assert P.unexpected_status(deals.CANCEL, {"status": "DELETED"}) == ""
    assert "AMENDED" in P.unexpected_status(deals.CLOSE, {"dealReference": "R", "status": "AMENDED"})
