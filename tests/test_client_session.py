"""What a slow client receives: order messages in order, completed bars queued up to a limit,
forming bars (and completed ones past the limit) conflated to the latest per key."""
import engine.bus as bus
from engine.bus import ClientSession
from maotrade.protocol.bar_block import pack_rows


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


def block(first, count, completed=True, epic="X"):
    return {"type": "market_data_block", "v": 1, "account": "1", "epic": epic, "time_frame": 1,
            "completed": completed, "bars": pack_rows([(first + i, 1.0, 1.0, 1.0, 1.0, 0.0) for i in range(count)])}


def test_blocked_client_queues_blocks_as_the_bars_they_hold_and_keeps_the_last_bar_past_the_limit():
    session = ClientSession(b"id", "slow")
    session.blocked = True
    session.put_data(block(0, 3), limit=5)
    session.put_data(block(3, 2), limit=5)
    assert session.queued_bars == 5
    session.put_data(block(5, 4), limit=5)  # past the limit: only its latest bar is kept
    session.put_data(block(0, 3, completed=False, epic="Y"), limit=5)  # forming bars: the latest only
    frame = session.take_frame()
    assert session.queued_bars == 0
    assert [m["type"] for m in frame] == ["market_data_block", "market_data_block", "market_data", "market_data"]
    assert [(m["epic"], m["date"]) for m in frame[2:]] == [("X", 8), ("Y", 2)]
    assert session.conflated_count == 3 + 2


def test_frames_to_a_client_are_cut_by_bars_as_well_as_by_messages(monkeypatch):
    monkeypatch.setattr(bus, "MAX_FRAME_BARS", 10)
    messages = [block(0, 6), block(6, 6), {"type": "order"}, block(12, 3)]
    assert bus.frame_bounds(messages) == [(0, 2), (2, 4)]
    monkeypatch.setattr(bus, "MAX_FRAME_MESSAGES", 1)
    assert bus.frame_bounds([{"type": "order"}] * 2) == [(0, 1), (1, 2)]
