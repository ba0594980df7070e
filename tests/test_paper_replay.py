"""The paper broker's replay mode in a real worker process, and the engine's lock-step gate."""

from engine.replay import ReplayGate
from maotrade.messages import EngineToWorker as In
from tests.kit import paper_document
from tests.kit import WorkerHarness

T0 = 1_704_067_200


def replay_document(path, **extra):
    return paper_document(replay_file=str(path), replay_epic="EURUSD", replay_time_frame=60,
                          replay_slippage=0.001, **extra)


def test_bars_one_per_advance_and_orders_fill_on_the_next_bar(tmp_path):
    data = tmp_path / "bars.csv"
    data.write_text("date,open,high,low,close\n" + "".join(
        f"{T0 + 60 * i},{o},{o + 1},{o - 1},{o + 0.5}\n" for i, o in enumerate((100, 110, 120))))
    with WorkerHarness(replay_document(data), tmp_path / "w") as worker:
        init = worker.wait_type("init_result", timeout=20)
        assert init["capabilities"]["replay"] is True and init["data_frames"] == {60: "REPLAY"}
        mark = worker.request(In.MARKET_DATA_REQUEST, request={"action": "subscribe", "epic": "EURUSD",
                                                               "time_frame": 1})
        assert worker.wait_type("error", since=mark)["reason"] == "EURUSD is replayed at 60s only, not 1s"
        worker.request(In.MARKET_DATA_REQUEST, request={"action": "subscribe", "epic": "EURUSD", "time_frame": 60})
        mark = worker.request(In.REPLAY_ADVANCE)
        first = worker.wait_type("market_data", since=mark)
        assert (first["replay_seq"], first["date"], first["open"], first["completed"]) == (0, T0 * 1000, 100, True)
        order = worker.order("EURUSD", 10)
        mark = worker.request(In.ORDER_OPEN, order)
        worker.wait_order(order.client_order_id, "ACCEPTED", since=mark)
        assert not [m for m in worker.received[mark:] if m["type"] == "market_data"], "no bar without an advance"
        mark = worker.request(In.REPLAY_ADVANCE)
        filled = worker.wait_order(order.client_order_id, "FILLED", since=mark)
        assert filled["fill"]["price"] == 110 * 1.001 and filled["fill"]["time"] == (T0 + 60) * 1000
        second = worker.wait_type("market_data", since=mark)
        assert second["replay_seq"] == 1
        assert worker.received.index(filled) < worker.received.index(second), "fills before the bar"
        worker.request(In.REPLAY_ADVANCE)
        worker.wait_type("market_data", replay_seq=2)
        # A restarted worker continues after the last bar it sent.
        worker.kill()
        worker.start()
        worker.wait_type("init_result", since=len(worker.received), timeout=20)
        mark = worker.request(In.MARKET_DATA_REQUEST, request={"action": "subscribe", "epic": "EURUSD",
                                                               "time_frame": 60})
        worker.request(In.REPLAY_ADVANCE)
        worker.request(In.PORTFOLIO_REQUEST)
        portfolio = worker.wait_type("portfolio", since=mark)["portfolio"]
        assert [p["qty"] for p in portfolio["positions"]] == [10]
        assert not [m for m in worker.received[mark:] if m["type"] == "market_data"], "the file was done"


def test_unreadable_replay_file_stops_the_account_with_the_reason(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,open,high,low,close\n1,2,1,2,2\n")
    with WorkerHarness(replay_document(bad), tmp_path / "w") as worker:
        down = worker.wait_type("account_disconnected", timeout=20)
        assert "replay_file" in down["reason"] and "row 2" in down["reason"]
        worker.process.join(10)
        assert worker.process.exitcode == 3


def test_gate_waits_for_every_acknowledging_receiver():
    sent = []
    gate = ReplayGate(lambda account, msg: sent.append((account, msg.TYPE)))
    gate.hello(b"s1", {"acks_replay": True})
    gate.hello(b"s2", {"acks_replay": True})
    gate.hello(b"viewer", {})
    gate.start("A")
    assert sent == [("A", "replay_advance")]
    gate.on_bar("A", 0, [b"s1", b"s2", b"viewer"])
    gate.on_ack(b"s1", "A", 0)
    gate.on_ack(b"s1", "A", 0)
    assert len(sent) == 1, "s2 has not handled bar 0 yet"
    gate.forget(b"s2")
    assert len(sent) == 2, "a client that left is not waited for"
    gate.on_bar("A", 1, [b"viewer"])
    assert len(sent) == 3, "nobody acknowledges: straight on"
    gate.on_bar("A", 2, [b"s1"])
    gate.on_ack(b"s1", "A", 1)
    assert len(sent) == 3, "a late acknowledgement of an older bar releases nothing"
    gate.on_ack(b"s1", "A", 2)
    assert sent[-1] == ("A", "replay_advance") and len(sent) == 4
