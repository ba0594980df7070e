"""What a slow client receives: order messages in order, completed bars queued up to a limit,
forming bars (and completed ones past the limit) conflated to the latest per key."""
import engine.bus as bus
from engine.bus import ClientSession


def bar(epic, n, completed=True):
    return {"type": "market_data", "account": "1", "epic": epic, "time_frame": 1, "date": n, "completed": completed}


def test_blocked_client_keeps_orders_queues_completed_bars_and_conflates_the_rest(monkeypatch):
    monkeypatch.setattr(bus, "MAX_QUEUED_BARS", 3)
    session = ClientSession(b"id", "slow")
    session.blocked = True
    session.put({"type": "order", "client_order_id": "a"})
    for n in range(5):
        session.put_data(bar("X", n))
    session.put_data(bar("Y", 0, completed=False))
    session.put_data(bar("Y", 1, completed=False))
    session.put({"type": "order", "client_order_id": "b"})
    frame = session.take_frame()
    assert [m.get("client_order_id") for m in frame[:2]] == ["a", "b"], "order messages first, in order"
    assert [(m["epic"], m["date"]) for m in frame[2:]] == [("X", 0), ("X", 1), ("X", 2), ("X", 4), ("Y", 1)]
    assert session.conflated_count == 2  # X 3 replaced by X 4, Y 0 by Y 1
    assert not session.waiting


def test_unblocked_client_gets_everything_in_order():
    session = ClientSession(b"id", "fast")
    for n in range(4):
        session.put_data(bar("X", n, completed=n % 2 == 0))
    assert [m["date"] for m in session.take_frame()] == [0, 1, 2, 3]
    assert session.conflated_count == 0
