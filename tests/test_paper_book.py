"""The paper broker's matching, stops and account figures (pure)."""
import pytest

from maotrade.matching import PaperBook, Quote
from maotrade.errors import InvalidOrder
from maotrade.order import BaseOrder, OrderAction


def make(qty, **kw):
    return BaseOrder(client_order_id=kw.pop("cid", f"c{qty}"), account="A", epic="X", epicBroker="X", qty=qty, **kw)


def closer(epic, qty, reason, client_order_id=""):
    return BaseOrder(client_order_id="stop", account="A", epic=epic, epicBroker=epic, qty=qty,
                     action=OrderAction.CLOSE, reason=reason)


@pytest.fixture
def book():
    b = PaperBook(balance=1000.0, commission_rate=0.001, margin_rate=0.1, account="A")
    b.quotes["X"] = Quote(99.0, 101.0, 0)
    return b


def test_market_buy_fills_at_ask_and_charges_commission(book):
    [event] = book.submit(make(2))
    assert event.fill.price == 101.0 and event.order.status == "FILLED"
    assert book.balance == pytest.approx(1000 - 2 * 101 * 0.001)
    info = book.account_info("USD")
    assert info["unrealized_pnl"] == pytest.approx((100 - 101) * 2)
    assert info["margin_used"] == pytest.approx(2 * 100 * 0.1)


def test_limit_waits_for_cross_then_fills_at_limit(book):
    [event] = book.submit(make(1, order_type="LIMIT", price=95.0))
    assert event.order.status == "ACCEPTED" and "c1" in book.working
    assert book.on_quote("X", Quote(96.0, 97.0, 1), closer) == []
    [fill] = book.on_quote("X", Quote(93.0, 94.0, 2), closer)
    assert fill.fill.price == 94.0, "a limit buy fills at the ask when it gapped below the limit"


def test_sell_stop_triggers_on_bid(book):
    book.submit(make(-1, order_type="STOP", price=90.0, cid="s"))
    assert book.on_quote("X", Quote(90.5, 92.0, 1), closer) == []
    [event] = book.on_quote("X", Quote(89.0, 91.0, 2), closer)
    assert event.fill.price == 89.0


def test_stop_loss_closes_position_at_bid(book):
    book.submit(make(3, stop_loss=95.0, take_profit=110.0))
    [event] = book.on_quote("X", Quote(94.0, 96.0, 5), closer)
    assert event.order.reason == "stop loss" and event.fill.qty == 3 and event.fill.price == 94.0
    assert book.positions["X"].is_flat and "X" not in book.stops


def test_partial_close_and_close_errors(book):
    book.submit(make(5))
    [event] = book.close(make(-2, cid="close"))
    assert book.positions["X"].qty == 3 and event.fill.price == 99.0
    with pytest.raises(InvalidOrder, match="exceeds"):
        book.close(make(-4, cid="too-much"))
    with pytest.raises(InvalidOrder, match="opposite"):
        book.close(make(1, cid="same-side"))


def test_cancel_and_amend(book):
    book.submit(make(1, order_type="LIMIT", price=50.0, cid="w"))
    assert book.cancel("w").status == "CANCELLED"
    with pytest.raises(InvalidOrder, match="not working"):
        book.cancel("w")
    book.submit(make(1, cid="p"))
    with pytest.raises(InvalidOrder, match="wrong side"):
        book.amend_stops("X", stop_loss=100.0, take_profit=None)
    book.amend_stops("X", stop_loss=90.0, take_profit=120.0)
    assert book.stops["X"] == {"stop_loss": 90.0, "take_profit": 120.0, "parent": ""}


def test_unknown_instrument(book):
    with pytest.raises(InvalidOrder, match="unknown instrument"):
        book.submit(BaseOrder(client_order_id="u", account="A", epic="Y", epicBroker="Y", qty=1))
