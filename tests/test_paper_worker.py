"""The paper Account Manager in a real process, driven through its real queues."""
from maotrade.messages import EngineToWorker as In


def test_init_reports_account_and_time_frames(paper_worker):
    init = paper_worker.wait_type("init_result")
    assert init["ok"] is True
    assert init["account_info"]["balance"] == 10000.0
    assert init["data_frames"] == {1: "SECOND", 60: "1MINUTE", 300: "5MINUTE"}
    paper_worker.wait_type("connection", state="connected")


def test_market_order_fills_at_ask_and_moves_balance(paper_worker):
    order = paper_worker.order("EURUSD", 1000)
    mark = paper_worker.request(In.ORDER_OPEN, order)
    filled = paper_worker.wait_order(order.client_order_id, "FILLED", since=mark)
    fill = filled["fill"]
    assert fill["qty"] == 1000 and fill["price"] > 0
    assert fill["time"] >= order.created, "a fill is never timestamped before its order"
    assert filled["order"]["filled_qty"] == 1000
    close = paper_worker.order("EURUSD", -400)
    mark = paper_worker.request(In.ORDER_CLOSE, close)
    closed = paper_worker.wait_order(close.client_order_id, "FILLED", since=mark)
    mark = paper_worker.request(In.PORTFOLIO_REQUEST)
    portfolio = paper_worker.wait_type("portfolio", since=mark)["portfolio"]
    assert [p["qty"] for p in portfolio["positions"]] == [600]
    realized = (closed["fill"]["price"] - fill["price"]) * 400
    mark = paper_worker.request(In.ACCOUNT_INFO_REQUEST)
    info = paper_worker.wait_type("account_info", since=mark)["info"]
    assert abs(info["balance"] - (10000.0 + realized)) < 1e-9


def test_limit_order_works_then_cancels(paper_worker):
    order = paper_worker.order("SPY", 5, order_type="LIMIT", price=1.0)
    mark = paper_worker.request(In.ORDER_OPEN, order)
    paper_worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
    mark = paper_worker.request(In.ORDER_CANCEL, order)
    paper_worker.wait_order(order.client_order_id, "CANCELLED", since=mark)


def test_unknown_instrument_is_rejected_with_reason(paper_worker):
    order = paper_worker.order("NOPE", 1)
    mark = paper_worker.request(In.ORDER_OPEN, order)
    rejected = paper_worker.wait_order(order.client_order_id, "REJECTED", since=mark)
    assert "NOPE" in rejected["order"]["reason"]


def test_bars_stream_after_subscribe(paper_worker):
    mark = paper_worker.request(In.MARKET_DATA_REQUEST,
                                request={"action": "subscribe", "epic": "EURUSD", "time_frame": 1})
    paper_worker.wait_type("market_data_response", since=mark, ok=True)
    bar = paper_worker.wait_type("market_data", since=mark, completed=True, timeout=5)
    assert bar["epic"] == "EURUSD" and bar["time_frame"] == 1
    assert bar["low"] <= bar["open"] <= bar["high"] and bar["low"] <= bar["close"] <= bar["high"]


def test_status_of_filled_order_survives_a_killed_worker(tmp_path):
    from tests.kit import paper_document
    from tests.kit import WorkerHarness
    with WorkerHarness(paper_document(), tmp_path) as first:
        first.wait_type("init_result", timeout=20)
        order = first.order("EURUSD", 10)
        first.request(In.ORDER_OPEN, order)
        filled = first.wait_order(order.client_order_id, "FILLED")
        first.kill()
        first.start()
        mark = first.request(In.ORDER_STATUS_REQUEST, order)
        status = first.wait_order(order.client_order_id, since=mark, timeout=20)
        assert status["order"]["status"] == "FILLED"
        assert [f["exec_id"] for f in status["fills"]] == [filled["fill"]["exec_id"]]
        lost = first.order("EURUSD", 1)
        mark = first.request(In.ORDER_STATUS_REQUEST, lost)
        assert first.wait_order(lost.client_order_id, since=mark)["not_found"] is True


def test_a_failed_first_connection_says_why(tmp_path):
    """The connection state names the broker's reason, not just that the first try failed."""
    from tests.kit import WorkerHarness, paper_document
    document = paper_document(state_file=str(tmp_path / "not-a-dir" / "x" / "broker.sqlite"))
    (tmp_path / "not-a-dir").write_text("a file where the broker expects a folder")
    with WorkerHarness(document, tmp_path / "worker") as worker:
        state = worker.wait_type("connection", state="reconnecting", timeout=20)
    assert state["reason"].startswith("initial connection failed: ")
    assert len(state["reason"]) > len("initial connection failed: ")
