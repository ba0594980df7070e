"""Blocks of bars: packed by the worker, checked by the engine, read back as bars by clients."""
import msgspec
import pytest
import zmq

from maotrade.errors import ProtocolError
from maotrade.protocol import FROM_WORKER, from_worker
from maotrade.protocol.bar_block import bar_maps, decode_rows, expand_blocks, pack_rows, row_count
from maotrade.queues import MessageQueue


def rows(start, end):
    return [(i, 1.0 + i, 2.0 + i, 0.5, 1.5 + i, 10.0) for i in range(start, end)]


def block(bars, account="7", completed=True):
    return {"type": "market_data_block", "v": 1, "account": account, "epic": "EURUSD", "time_frame": 60,
            "completed": completed, "bars": bars}


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536])
def test_row_count_is_read_from_the_array_header(count):
    assert row_count(pack_rows([(1, 1.0, 1.0, 1.0, 1.0, 0.0)] * count)) == count


def test_bars_read_back_as_the_market_data_maps_a_strategy_gets():
    bars = bar_maps(block(pack_rows(rows(0, 3))))
    assert bars[1] == {"type": "market_data", "v": 1, "account": "7", "epic": "EURUSD", "time_frame": 60,
                       "completed": True, "date": 1, "open": 2.0, "high": 3.0, "low": 0.5, "close": 2.5,
                       "volume": 10.0}
    assert [b["date"] for b in bars] == [0, 1, 2]


def test_a_bad_row_is_refused_alone_with_its_index_and_the_others_are_kept():
    bars = msgspec.msgpack.encode([[0, 1.0, 1.0, 1.0, 1.0, 0.0], [1, "high", 1.0, 1.0, 1.0, 0.0],
                                   [2, 1.0, 1.0, 1.0, 1.0, 0.0]])
    good, reasons = decode_rows(bars)
    assert [r.date for r in good] == [0, 2]
    assert len(reasons) == 1 and reasons[0].startswith("market_data_block: row 1 is not [date, open")


def test_bars_that_are_not_rows_are_refused_in_one_line():
    with pytest.raises(ProtocolError, match="`bars` is not an array of rows"):
        decode_rows(b"\xc1garbage")


def test_expanding_keeps_blocks_and_other_messages_in_order():
    messages = [block(pack_rows(rows(0, 2))), {"type": "order", "client_order_id": "a"},
                block(pack_rows(rows(2, 3)))]
    assert [m.get("date", m.get("client_order_id")) for m in expand_blocks(messages)] == [0, 1, "a", 2]
    with pytest.raises(ProtocolError, match="malformed market_data_block"):
        expand_blocks([{"type": "market_data_block", "bars": pack_rows(rows(0, 1))}])


def test_consecutive_bars_of_a_stream_leave_as_one_block_and_order_is_kept():
    ctx = zmq.Context()
    receiver = MessageQueue.receiver(ctx, "inproc://bars", FROM_WORKER, as_maps=True)
    sender = MessageQueue.sender(ctx, "inproc://bars")

    def pack(key, items):
        return from_worker.MarketDataBlock(account="7", epic=key, time_frame=60, completed=True,
                                           bars=pack_rows(items))
    try:
        for row in rows(0, 5):
            sender.put_run("EURUSD", row, pack, limit=3)
        sender.put(from_worker.Heartbeat(account="7"))
        for row in rows(5, 7):
            sender.put_run("EURUSD", row, pack, limit=3)
        sender.put_run("GBPUSD", rows(7, 8)[0], pack, limit=3)
        assert sender.flush()
        got = []
        while len(got) < 5:
            receiver.wait(5000)
            got.extend(receiver.drain())
        assert [(m["type"], m.get("epic"), row_count(m.get("bars", b""))) for m in got] == [
            ("market_data_block", "EURUSD", 3), ("market_data_block", "EURUSD", 2), ("heartbeat", None, 0),
            ("market_data_block", "EURUSD", 2), ("market_data_block", "GBPUSD", 1)]
        assert isinstance(got[0]["bars"], bytes), "bars stay bytes through decoding to maps"
        assert [b["date"] for b in expand_blocks(got) if b["type"] == "market_data"] == list(range(8))
    finally:
        sender.close(0)
        receiver.close(0)
        ctx.term()
