"""Bar matching of the shared book (backtester and paper replay): hand-computed prices."""
import pytest

from maotrade.bars import make_bar
from maotrade.matching import PaperBook
from maotrade.order import BaseOrder, OrderAction


def make(qty, cid=None, **kw):
    return BaseOrder(client_order_id=cid or f"c{qty}", account="A", epic="X", epicBroker="X", qty=qty, **kw)


def closer(epic, qty, reason, client_order_id=""):
    return BaseOrder(client_order_id=f"stop-{reason}", account="A", epic=epic, epicBroker=epic, qty=qty,
                     action=OrderAction.CLOSE, reason=reason, source="broker")


def bar(t, o, h, l, c):
    return make_bar("X", 60, t * 60_000, o, h, l, c)


@pytest.fixture
def book():
    b = PaperBook(balance=10_000.0, commission_rate=0.001, account="A", bar_epics={"X"}, slippage=0.01)
    b.on_bar("X", bar(0, 100, 101, 99, 100), closer)
    return b


def test_market_order_waits_for_next_bar_and_fills_at_open_plus_slippage(book):
    [event] = book.submit(make(2))
    assert event.order.status == "ACCEPTED" and event.fill is None
    [event] = book.on_bar("X", bar(1, 110, 112, 108, 111), closer)
    assert event.fill.price == pytest.approx(111.1) and event.fill.time == 60_000
    assert event.fill.commission == pytest.approx(2 * 111.1 * 0.001)
    assert book.balance == pytest.approx(10_000 - 0.2222)
    info = book.account_info("USD")
    assert info["equity"] == pytest.approx(10_000 - 0.2222 + (111 - 111.1) * 2)
    [event] = book.close(make(-2, "out"))
    assert event.order.status == "ACCEPTED"
    [event] = book.on_bar("X", bar(2, 120, 121, 119, 120), closer)
    assert event.fill.price == pytest.approx(118.8)  # sells lose the slippage too
    assert book.positions["X"].realized_pnl == pytest.approx((118.8 - 111.1) * 2)


def test_limit_fills_at_its_price_inside_the_bar_or_at_a_better_open(book):
    book.submit(make(1, "l1", order_type="LIMIT", price=95.0))
    assert book.on_bar("X", bar(1, 99, 100, 96, 97), closer) == []
    [event] = book.on_bar("X", bar(2, 97, 98, 94, 96), closer)
    assert event.fill.price == 95.0
    book.submit(make(-1, "l2", order_type="LIMIT", price=100.0))
    [event] = book.on_bar("X", bar(3, 103, 104, 102, 103), closer)
    assert event.fill.price == 103.0, "gapped above a sell limit: filled at the better open"


def test_stop_triggers_on_high_low_with_slippage(book):
    book.submit(make(1, "s1", order_type="STOP", price=105.0))
    assert book.on_bar("X", bar(1, 100, 104, 99, 103), closer) == []
    [event] = book.on_bar("X", bar(2, 103, 106, 102, 105), closer)
    assert event.fill.price == pytest.approx(105 * 1.01)
    book.submit(make(-1, "s2", order_type="STOP", price=100.0))
    [event] = book.on_bar("X", bar(3, 98, 99, 97, 98), closer)
    assert event.fill.price == pytest.approx(98 * 0.99), "gapped through a sell stop: the open, less slippage"


def test_stop_loss_and_take_profit_on_the_bar_range(book):
    book.slippage = 0.0
    book.submit(make(3, "o1", stop_loss=95.0, take_profit=110.0))
    [entry] = book.on_bar("X", bar(1, 100, 109, 96, 108), closer)
    assert entry.fill.price == 100.0 and book.stops["X"]["take_profit"] == 110.0
    [exit_] = book.on_bar("X", bar(2, 108, 112, 107, 111), closer)
    assert exit_.order.reason == "take profit" and exit_.fill.price == 110.0 and exit_.fill.qty == 3
    assert book.positions["X"].is_flat and "X" not in book.stops
    # Both levels inside one bar: the stop loss is assumed first.
    book.submit(make(-1, "o2", stop_loss=115.0, take_profit=100.0))
    book.on_bar("X", bar(3, 111, 112, 110, 111), closer)
    [exit_] = book.on_bar("X", bar(4, 111, 116, 99, 105), closer)
    assert exit_.order.reason == "stop loss" and exit_.fill.price == 115.0
    # A gap past the stop fills at the open.
    book.submit(make(1, "o3", stop_loss=100.0))
    book.on_bar("X", bar(5, 105, 106, 104, 105), closer)
    [exit_] = book.on_bar("X", bar(6, 90, 92, 89, 91), closer)
    assert exit_.fill.price == 90.0


def test_second_close_of_a_position_already_closed_is_cancelled(book):
    book.submit(make(1, "o"))
    book.on_bar("X", bar(1, 100, 100, 100, 100), closer)
    book.close(make(-1, "x1"))
    book.close(make(-1, "x2"))
    first, second = book.on_bar("X", bar(2, 100, 100, 100, 100), closer)
    assert first.order.status == "FILLED"
    assert second.order.status == "CANCELLED" and second.order.reason == "position already closed"
