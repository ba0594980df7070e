"""The IB Account Manager in a real worker process, with the real ib_insync, against
the fake TWS over the TWS socket protocol."""
from maotrade.messages import EngineToWorker as In


def test_connect_reports_account_info_and_portfolio(ib_worker, fake_tws):
    init = ib_worker.wait_type("init_result")
    info = init["account_info"]
    assert info["account"] == "DU123456" and info["currency"] == "USD"
    assert info["balance"] == 100_000.0 and info["equity"] == 100_000.0
    assert set(info) >= {"available", "margin_used", "unrealized_pnl", "realized_pnl", "buying_power"}
    assert init["portfolio"] == {"positions": [], "orders": []}
    assert 11 in fake_tws.connected_client_ids()


def test_market_order_fills_with_commission_and_shows_in_portfolio(ib_worker, fake_tws):
    order = ib_worker.order("SPY", 10)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    filled = ib_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    assert filled["fill"]["qty"] == 10 and filled["fill"]["price"] == 450.01
    assert filled["fill"]["commission"] == 1.0
    assert filled["order"]["filled_qty"] == 10 and filled["order"]["broker_ref"]
    positions = ib_worker.positions_when(lambda positions: bool(positions))
    assert positions == [{"epic": "SPY", "epicBroker": "SPY-USD-STK-SMART", "qty": 10.0,
                          "avg_price": 450.01, "market_price": 450.0,
                          "unrealized_pnl": positions[0]["unrealized_pnl"], "realized_pnl": 0.0}]
    assert abs(positions[0]["unrealized_pnl"] - (-0.1)) < 1e-6
    mark = ib_worker.request(In.ACCOUNT_INFO_REQUEST)
    info = ib_worker.wait_type("account_info", since=mark)["info"]
    assert info["balance"] == 100_000.0 - 1.0
    assert fake_tws.orders_with_ref(order.client_order_id) == 1


def test_rejected_order_carries_ib_message(ib_worker):
    order = ib_worker.order("SPY", 1_000_000)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    rejected = ib_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert rejected["order"]["reason"].startswith("IB 201: Order rejected - reason:YOUR ORDER IS NOT ACCEPTED")


def test_unknown_instrument_is_refused_before_ib(ib_worker, fake_tws):
    order = ib_worker.order("NOPE", 1)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    rejected = ib_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "NOPE" in rejected["order"]["reason"] and "security definition" in rejected["order"]["reason"]
    assert fake_tws.orders_with_ref(order.client_order_id) == 0


def test_garbage_from_tws_is_survived(ib_worker, fake_tws):
    fake_tws.send_raw(3, "not-a-number", "Filled", "x", "y")   # orderStatus with bad fields
    fake_tws.send_raw(11, -1, 5)                                 # truncated execDetails
    fake_tws.send_raw(9999, "unknown message id")
    order = ib_worker.order("SPY", 1)
    mark = ib_worker.request(In.ORDER_OPEN, order)
    assert ib_worker.wait_order(order.client_order_id, "FILLED", since=mark)["fill"]["qty"] == 1


def test_status_after_worker_restart_comes_from_ib(fake_tws, tmp_path):
    from tests.kit import ib_document
    from tests.kit import WorkerHarness, wait_until
    with WorkerHarness(ib_document(fake_tws.port), tmp_path) as worker:
        worker.wait_type("connection", state="connected", timeout=20)
        order = worker.order("SPY", 3, order_type="LIMIT", price=445.0)
        mark = worker.request(In.ORDER_OPEN, order)
        worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
        worker.kill()
        wait_until(lambda: fake_tws.connected_client_ids() == [], what="TWS to see the socket close")
        fake_tws.fill(order.client_order_id, 3, 444.0)
        worker.start()
        mark = len(worker.received)
        worker.wait_type("connection", state="connected", since=mark, timeout=20)
        mark = worker.request(In.ORDER_STATUS_REQUEST, order)
        status = worker.wait_order(order.client_order_id, since=mark, request=In.ORDER_STATUS_REQUEST)
        assert status["order"]["status"] == "FILLED" and status["order"]["filled_qty"] == 3
        assert [(f["qty"], f["price"], f["commission"]) for f in status["fills"]] == [(3.0, 444.0, 1.0)]
        assert fake_tws.orders_with_ref(order.client_order_id) == 1
