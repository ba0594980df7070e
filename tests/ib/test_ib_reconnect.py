"""Dropped connections, IB connectivity codes and a duplicate clientId."""
import pytest

from maotrade.messages import EngineToWorker as In
from tests.kit import ib_document
from tests.kit import WorkerHarness, wait_until

pytestmark = pytest.mark.fault


def _fills_of(worker, client_order_id):
    return [m["fill"]["exec_id"] for m in worker.received if m.get("type") == "order_event"
            and m.get("fill") and m["order"]["client_order_id"] == client_order_id]


def test_fill_during_disconnect_recovered_once_and_streams_restored(ib_worker, fake_tws):
    w = ib_worker
    for request in ({"action": "subscribe", "epic": "SPY", "time_frame": 5},
                    {"action": "subscribe", "epic": "EURUSD", "time_frame": 1}):
        mark = w.request(In.MARKET_DATA_REQUEST, request=request)
        w.wait_type("market_data_response", since=mark, ok=True)
    order = w.order("SPY", 7, order_type="LIMIT", price=445.0)
    mark = w.request(In.ORDER_OPEN, order)
    w.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    wait_until(lambda: sorted(fake_tws.streams()) == [("bars", "SPY"), ("ticks", "EUR")],
               what="both streams live")

    fake_tws.pause()
    w.wait_type("connection", state="reconnecting", since=mark)
    fake_tws.fill(order.client_order_id, 7, 444.5)  # happens while nobody is connected
    refused = w.order("SPY", 1)
    rmark = w.request(In.ORDER_OPEN, refused)
    assert "order not sent" in w.wait_order(refused.client_order_id, "REJECTED", since=rmark)["order"]["reason"]

    fake_tws.resume()
    back = w.wait_type("connection", state="connected", since=rmark, timeout=20)
    filled = w.wait_order(order.client_order_id, "FILLED", since=rmark)
    assert filled["fill"]["price"] == 444.5 and filled["fill"]["commission"] == 1.0
    after = w.received.index(back)
    w.wait_type("market_data", since=after, epic="SPY", time_frame=5)
    w.wait_type("market_data", since=after, epic="EURUSD", time_frame=1)
    wait_until(lambda: sorted(fake_tws.streams()) == [("bars", "SPY"), ("ticks", "EUR")],
               what="both streams restored")
    assert len(_fills_of(w, order.client_order_id)) == 1
    assert fake_tws.orders_with_ref(order.client_order_id) == 1
    assert fake_tws.orders_with_ref(refused.client_order_id) == 0

    # a second drop replays the same execution from TWS: still applied only once
    fake_tws.drop_clients()
    mark = len(w.received)
    w.wait_type("connection", state="reconnecting", since=mark)
    w.wait_type("connection", state="connected", since=mark, timeout=20)
    later = w.order("SPY", 1)
    lmark = w.request(In.ORDER_OPEN, later)
    w.wait_order(later.client_order_id, "FILLED", since=lmark)
    assert len(_fills_of(w, order.client_order_id)) == 1


def test_connectivity_codes_change_state_not_orders(ib_worker, fake_tws):
    w = ib_worker
    order = w.order("SPY", 2, order_type="LIMIT", price=400.0)
    mark = w.request(In.ORDER_OPEN, order)
    w.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    fake_tws.send_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
    lost = w.wait_type("connection", state="reconnecting", since=mark)
    assert "1100" in lost["reason"]
    blocked = w.order("SPY", 1)
    bmark = w.request(In.ORDER_OPEN, blocked)
    w.wait_order(blocked.client_order_id, "REJECTED", since=bmark)
    fake_tws.fill(order.client_order_id, 2, 399.0)
    fake_tws.send_error(1102, "Connectivity between IB and Trader Workstation has been restored - "
                              "data maintained.")
    w.wait_type("connection", state="connected", since=bmark)
    w.wait_order(order.client_order_id, "FILLED", since=mark)
    fake_tws.send_error(2103, "Market data farm connection is broken:usfarm")
    still = w.order("SPY", 1)
    smark = w.request(In.ORDER_OPEN, still)
    w.wait_order(still.client_order_id, "FILLED", since=smark)
    assert all(m.get("state") != "reconnecting" for m in w.received[bmark:] if m.get("type") == "connection")
    assert order.client_order_id not in str([m for m in w.received if m.get("type") == "error"])


def test_duplicate_client_id_is_a_clear_error(ib_worker, fake_tws, tmp_path):
    doc = ib_document(fake_tws.port, account="42", reconnect_base=5.0)
    with WorkerHarness(doc, tmp_path / "second") as second:
        error = second.wait_type("error", timeout=20)
        assert "clientId 11 is already in use" in error["reason"]
        second.wait_type("connection", state="reconnecting")
    assert fake_tws.connected_client_ids() == [11]
