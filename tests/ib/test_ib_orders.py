"""Limit, stop, bracket, partial fills, close, amend and cancel through the fake TWS."""
from maotrade.messages import EngineToWorker as In
from tests.kit import wait_until


def test_limit_order_works_then_cancels(ib_worker, fake_tws):
    order = ib_worker.order("SPY", 5, order_type="LIMIT", price=400.0)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    ib_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    mark = ib_worker.request(In.ORDER_CANCEL, order)
    cancelled = ib_worker.wait_order(order.client_order_id, "CANCELLED", since=mark)
    assert cancelled["order"]["filled_qty"] == 0
    assert fake_tws.order_by_ref(order.client_order_id).status == "Cancelled"
    mark = ib_worker.request(In.ORDER_CANCEL, order)
    refused = ib_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_CANCEL)
    assert "CANCELLED" in refused["refused"]


def test_limit_order_partially_fills_then_fills(ib_worker, fake_tws):
    order = ib_worker.order("AAPL", 300, order_type="LIMIT", price=180.0)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    ib_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    fake_tws.fill(order.client_order_id, 100, 179.5)
    part = ib_worker.wait_order(order.client_order_id, "PARTIALLY_FILLED", since=mark)
    assert part["fill"] == {"exec_id": part["fill"]["exec_id"], "qty": 100.0, "price": 179.5,
                            "time": part["fill"]["time"], "commission": 1.0}
    fake_tws.fill(order.client_order_id, 200, 179.0)
    done = ib_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert done["fill"]["qty"] == 200 and done["fill"]["commission"] == 1.0
    assert abs(done["order"]["avg_fill_price"] - (179.5 * 100 + 179.0 * 200) / 300) < 1e-9
    fills = [m["fill"]["exec_id"] for m in ib_worker.received[mark:]
             if m.get("type") == "order_event" and m.get("fill")
             and m["order"]["client_order_id"] == order.client_order_id]
    assert len(fills) == len(set(fills)) == 2


def test_stop_order_triggers_when_price_crosses(ib_worker, fake_tws):
    order = ib_worker.order("SPY", -3, order_type="STOP", price=440.0)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    ib_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    fake_tws.set_price("SPY", 439.0)
    filled = ib_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["fill"]["price"] == 438.99 and filled["order"]["filled_qty"] == -3


def test_bracket_take_profit_closes_and_cancels_stop(ib_worker, fake_tws):
    order = ib_worker.order("SPY", 10, stop_loss=440.0, take_profit=460.0)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    ib_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    stop = fake_tws.order_by_ref(order.client_order_id + "/SL")
    profit = fake_tws.order_by_ref(order.client_order_id + "/TP")
    assert stop.parent_id == profit.parent_id == fake_tws.order_by_ref(order.client_order_id).order_id
    assert stop.oca_group == profit.oca_group != ""
    assert (stop.status, profit.status) == ("Submitted", "Submitted")
    fake_tws.set_price("SPY", 461.0)
    closed = ib_worker.wait_order(order.client_order_id + "/TP", "FILLED", since=mark)
    assert closed["order"]["qty"] == -10 and closed["order"]["action"] == "close"
    assert closed["order"]["source"] == "bracket" and closed["order"]["parent"] == order.client_order_id
    assert closed["fill"]["price"] == 460.99
    wait_until(lambda: fake_tws.order_by_ref(order.client_order_id + "/SL").status == "Cancelled",
               what="OCA sibling cancelled")
    assert ib_worker.positions_when(lambda positions: positions == []) == []


def test_amend_stop_moves_the_working_stop_loss(ib_worker, fake_tws):
    order = ib_worker.order("SPY", 10, stop_loss=440.0, take_profit=470.0)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    ib_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    order.stop_loss = 445.0
    mark = ib_worker.request(In.ORDER_STOP, order)
    ib_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STOP)
    wait_until(lambda: fake_tws.order_by_ref(order.client_order_id + "/SL").aux_price == 445.0,
               what="stop moved at IB")
    fake_tws.set_price("SPY", 444.0)
    stopped = ib_worker.wait_order(order.client_order_id + "/SL", "FILLED", since=mark)
    assert stopped["fill"]["price"] == 443.99 and stopped["order"]["leg"] == "SL"


def test_amend_stop_protects_a_plain_filled_position(ib_worker, fake_tws):
    order = ib_worker.order("SPY", 4)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    ib_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    order.stop_loss = 430.0
    mark = ib_worker.request(In.ORDER_STOP, order)
    answer = ib_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STOP)
    assert "refused" not in answer
    stop = wait_until(lambda: fake_tws.order_by_ref(order.client_order_id + "/SL"),
                      what="protective stop at TWS")
    assert (stop.action, stop.qty, stop.order_type, stop.aux_price) == ("SELL", 4, "STP", 430.0)


def test_close_position_partially_then_refuses_too_much(ib_worker, fake_tws):
    opened = ib_worker.order("ES_FUT", 2)
    mark = ib_worker.request(In.ORDER_OPEN, opened)
    ib_worker.wait_order(opened.client_order_id, "FILLED", since=mark)
    close = ib_worker.order("ES_FUT", -1)
    mark = ib_worker.request(In.ORDER_CLOSE, close)
    closed = ib_worker.wait_order(close.client_order_id, "FILLED", since=mark)
    assert closed["fill"]["price"] == 4499.75 and closed["fill"]["commission"] == 2.25
    [position] = ib_worker.positions_when(lambda positions: [p["qty"] for p in positions] != [2])
    assert position["epic"] == "ES_FUT" and position["qty"] == 1 and position["avg_price"] == 4500.25
    assert position["realized_pnl"] == (4499.75 - 4500.25) * 50 - 2.25
    too_much = ib_worker.order("ES_FUT", -5)
    mark = ib_worker.request(In.ORDER_CLOSE, too_much)
    refused = ib_worker.wait_order(too_much.client_order_id, since=mark, request=In.ORDER_CLOSE)
    assert "exceeds the position of 1" in refused["refused"]
    assert fake_tws.orders_with_ref(too_much.client_order_id) == 0


def test_status_request_answers_from_ib(ib_worker):
    order = ib_worker.order("EURUSD", 20000)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    filled = ib_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    mark = ib_worker.request(In.ORDER_STATUS_REQUEST, order)
    status = ib_worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STATUS_REQUEST)
    assert status["order"]["status"] == "FILLED"
    assert [f["exec_id"] for f in status["fills"]] == [filled["fill"]["exec_id"]]
    stranger = ib_worker.order("SPY", 1)
    mark = ib_worker.request(In.ORDER_STATUS_REQUEST, stranger)
    assert ib_worker.wait_order(stranger.client_order_id, since=mark)["not_found"] is True
