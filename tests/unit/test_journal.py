"""The engine's journal in-process, against a real temporary SQLite file."""
from __future__ import annotations

import sqlite3

import pytest

from engine.journal import Journal
from maotrade.order import BaseOrder, Fill, OrderStatus
from maotrade.positions import Position


@pytest.fixture
def journal(tmp_path):
    opened = Journal(tmp_path / "journal.sqlite")
    yield opened
    opened.close()


def order(cid: str = "j-1", qty: float = 10, account: str = "1", epic: str = "EURUSD", **fields) -> BaseOrder:
    return BaseOrder(client_order_id=cid, account=account, epic=epic, epicBroker=epic, qty=qty, **fields)


def filled(o: BaseOrder, *fills: Fill) -> BaseOrder:
    for f in fills:
        o.add_fill(f)
    return o


def test_an_order_is_inserted_once_and_read_back_with_every_field(journal):
    o = order(order_type="LIMIT", price=1.1, stop_loss=1.0, take_profit=1.2, source="api")
    assert journal.insert_orders([o], strategy="alpha") is True
    assert journal.insert_orders([order(qty=99)]) is False  # same client order id: refused, first kept
    back = journal.get_order("1", "j-1")
    assert back == o
    assert journal.order_strategy("1", "j-1") == "alpha"
    assert journal.get_order("1", "nope") is None
    assert journal.get_order("2", "j-1") is None  # ids are per account
    assert journal.order_strategy("1", "nope") == ""


def test_save_order_updates_state_and_keeps_the_strategy(journal):
    o = order()
    journal.insert_orders([o], strategy="alpha")
    o.set_submitted("REF-1")
    journal.save_order(o)
    back = journal.get_order("1", "j-1")
    assert back.status == OrderStatus.SUBMITTED and back.broker_ref == "REF-1"
    assert journal.order_strategy("1", "j-1") == "alpha"


def test_open_orders_are_the_non_final_ones_per_account(journal):
    journal.insert_orders([order("a")])
    done = order("b")
    done.set_rejected("no")
    journal.insert_orders([done])
    journal.insert_orders([order("c", account="2")])
    assert {o.client_order_id for o in journal.open_orders()} == {"a", "c"}
    assert [o.client_order_id for o in journal.open_orders("1")] == ["a"]


def test_list_orders_filters_and_orders_newest_first(journal):
    journal.insert_orders([order("old", created=1000)])
    journal.insert_orders([order("mid", epic="SPY", created=2000, source="api")])
    journal.insert_orders([order("new", created=3000)])
    assert [o.client_order_id for o in journal.list_orders()] == ["new", "mid", "old"]
    assert [o.client_order_id for o in journal.list_orders(epic="SPY")] == ["mid"]
    assert [o.client_order_id for o in journal.list_orders(source="api")] == ["mid"]
    assert [o.client_order_id for o in journal.list_orders(since=2000, until=3000)] == ["mid"]
    assert [o.client_order_id for o in journal.list_orders(limit=1)] == ["new"]
    assert journal.list_orders(status=OrderStatus.FILLED) == []


def test_a_fill_moves_the_position_and_is_recorded_once_by_exec_id(journal):
    o = order(qty=10)
    journal.insert_orders([o])
    first = Fill("E1", 4, 1.10, 111, commission=0.5)
    filled(o, first)
    assert [f for f, _ in journal.apply_fills(o, [first])] == [first]
    assert journal.apply_fills(o, [first]) == []  # the same execution again: nothing moves
    assert journal.position("1", "EURUSD") == Position("EURUSD", 4, 1.10, 0.0)
    [row] = journal.fills("1")
    assert row == {"exec_id": "E1", "client_order_id": "j-1", "epic": "EURUSD", "qty": 4, "price": 1.10,
                   "commission": 0.5, "time": 111, "external": 0}
    assert journal.get_order("1", "j-1").status == OrderStatus.PARTIALLY_FILLED


def test_fills_of_a_sell_are_signed_and_realize_pnl_against_the_position(journal):
    buy = filled(order("buy", qty=10), Fill("B1", 10, 1.00, 1))
    journal.insert_orders([buy])
    journal.apply_fills(buy, [Fill("B1", 10, 1.00, 1)])
    sell = order("sell", qty=-10)
    journal.insert_orders([sell])
    fills = [Fill("S1", 6, 1.10, 2), Fill("S2", 4, 1.20, 3)]
    filled(sell, *fills)
    applied = journal.apply_fills(sell, fills)
    assert [pnl for _, pnl in applied] == pytest.approx([0.6, 0.8])
    position = journal.position("1", "EURUSD")
    assert position.is_flat and position.realized_pnl == pytest.approx(1.4)
    assert [f["qty"] for f in journal.fills("1", "sell")] == [-6, -4]
    assert journal.get_order("1", "sell").status == OrderStatus.FILLED


def test_fills_of_several_orders_are_kept_apart_and_in_arrival_order(journal):
    a, b = order("a", qty=2), order("b", qty=3)
    for o, f in ((a, Fill("A1", 2, 1.0, 5)), (b, Fill("B1", 3, 2.0, 4))):
        journal.insert_orders([o])
        journal.apply_fills(filled(o, f), [f])
    assert [f["exec_id"] for f in journal.fills("1")] == ["A1", "B1"]
    assert [f["exec_id"] for f in journal.fills("1", "b")] == ["B1"]
    assert journal.position("1", "EURUSD").qty == 5


def test_the_journal_keeps_orders_without_their_fills_and_fills_in_their_table(journal):
    o = order()
    journal.insert_orders([o])
    f = Fill("E1", 10, 1.0, 1)
    journal.apply_fills(filled(o, f), [f])
    row = journal.db.execute("SELECT data FROM orders WHERE client_order_id = 'j-1'").fetchone()[0]
    assert "E1" not in row  # the order row holds no copy of a fill
    assert journal.fills("1", "j-1")[0]["exec_id"] == "E1"
    assert [f["exec_id"] for f in journal.get_order("1", "j-1").fills] == ["E1"], "read back with its fills"


def test_external_fills_are_marked(journal):
    o = order("broker-close", qty=-1, source="broker")
    journal.insert_orders([o])
    f = Fill("X1", 1, 1.0, 1)
    journal.apply_fills(filled(o, f), [f], external=True)
    assert journal.fills("1")[0]["external"] == 1


def test_positions_lists_flat_ones_with_their_realized_pnl(journal):
    journal.set_position("1", Position("EURUSD", 0.0, 0.0, 12.5))
    journal.set_position("1", Position("SPY", 3, 400.0, 0.0))
    journal.set_position("2", Position("SPY", 1, 1.0, 0.0))
    assert journal.positions("1") == [Position("EURUSD", 0.0, 0.0, 12.5), Position("SPY", 3, 400.0, 0.0)]
    assert journal.position("1", "GBPUSD") == Position("GBPUSD")


def test_balances_return_the_newest_snapshot(journal):
    assert journal.last_balance("1") is None
    journal.record_balance("1", {"balance": 1})
    journal.record_balance("1", {"balance": 2})
    journal.record_balance("2", {"balance": 3})
    assert journal.last_balance("1") == {"balance": 2}


def test_a_discrepancy_is_recorded_once_while_open_and_resolved_by_id(journal):
    first = journal.record_discrepancy("1", "position", "EURUSD", {"qty": 1}, {"qty": 2})
    assert journal.record_discrepancy("1", "position", "EURUSD", {"qty": 1}, {"qty": 2}) == first
    other = journal.record_discrepancy("1", "position", "EURUSD", {"qty": 1}, {"qty": 3})
    assert other != first
    [open_one, _] = journal.discrepancies("1")
    assert open_one["engine"] == {"qty": 1} and open_one["broker"] == {"qty": 2}
    journal.resolve_discrepancy(first, "adopt")
    assert [d["id"] for d in journal.discrepancies("1")] == [other]
    resolved = next(d for d in journal.discrepancies("1", open_only=False) if d["id"] == first)
    assert resolved["resolution"] == "adopt" and resolved["resolved"]
    # Resolved, the same difference found again is a new discrepancy.
    assert journal.record_discrepancy("1", "position", "EURUSD", {"qty": 1}, {"qty": 2}) not in (first, other)


def test_the_audit_log_is_kept_in_order_per_account(journal):
    journal.audit("1", "adopt", {"id": 1})
    journal.audit("2", "ignore", {"id": 2})
    journal.audit("1", "ignore", {"id": 3})
    assert [e["detail"]["id"] for e in journal.audit_log("1")] == [1, 3]
    assert [e["action"] for e in journal.audit_log()] == ["adopt", "ignore", "ignore"]


def test_everything_survives_closing_and_reopening_the_file(tmp_path):
    path = tmp_path / "journal.sqlite"
    first = Journal(path, durability="full")
    o = order()
    first.insert_orders([o], strategy="alpha")
    f = Fill("E1", 10, 1.5, 1)
    first.apply_fills(filled(o, f), [f])
    first.close()
    again = Journal(path)
    try:
        assert again.get_order("1", "j-1").status == OrderStatus.FILLED
        assert again.position("1", "EURUSD") == Position("EURUSD", 10, 1.5, 0.0)
        assert again.apply_fills(o, [f]) == []  # the dedupe key outlives the process
    finally:
        again.close()


def test_a_second_reader_sees_committed_state_while_the_journal_is_open(journal):
    o = order()
    journal.insert_orders([o])
    reader = sqlite3.connect(str(journal.path))
    try:
        assert reader.execute("SELECT status FROM orders WHERE client_order_id = 'j-1'").fetchone() == ("NEW",)
    finally:
        reader.close()


def test_a_fill_batch_that_fails_half_way_changes_nothing(journal):
    o = order(qty=10)
    journal.insert_orders([o])
    good = Fill("E1", 5, 1.0, 1)
    bad = Fill("E2", 5, "not a price", 1)  # recorded, then moving the position raises
    with pytest.raises(TypeError):
        journal.apply_fills(o, [good, bad])
    assert journal.fills("1") == []  # the first fill of the batch rolled back with it
    assert journal.position("1", "EURUSD").is_flat
    assert journal.apply_fills(o, [good]) != []  # and can be applied once it comes again


def test_a_fill_without_exec_id_is_not_recorded(journal):
    o = order(qty=10)
    journal.insert_orders([o])
    assert journal.apply_fills(o, [Fill(None, 5, 1.0, 1)]) == []
    assert journal.fills("1") == [] and journal.position("1", "EURUSD").is_flat


def other_reader(journal) -> sqlite3.Connection:
    return sqlite3.connect(str(journal.path))


def test_a_group_is_one_transaction_seen_by_others_only_when_it_ends(journal):
    reader = other_reader(journal)
    try:
        before = journal.commits
        with journal.group():
            assert journal.insert_orders([order("g-1")]) is True
            journal.apply_fills(order("g-2", qty=5), [Fill("g-x", 5, 1.1, 1000)])
            journal.save_order(order("g-3"))
            assert reader.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0, "nothing visible yet"
            assert journal.get_order("1", "g-1") is not None, "the engine reads its own writes"
        assert reader.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 3
        assert reader.execute("SELECT qty FROM positions").fetchall() == [(5.0,)]
        assert journal.commits == before + 1
    finally:
        reader.close()


def test_a_failing_unit_in_a_group_undoes_itself_only(journal):
    good = order("u-1", qty=3)
    bad = order("u-2", qty=4)

    def explode(fill):
        raise RuntimeError("state machine refused")

    with journal.group():
        journal.apply_fills(good, [Fill("u-x", 3, 1.1, 1000)], apply=good.add_fill)
        with pytest.raises(RuntimeError):
            journal.apply_fills(bad, [Fill("u-y", 4, 1.2, 1000)], apply=explode)
    assert [f["exec_id"] for f in journal.fills("1")] == ["u-x"]
    assert journal.position("1", "EURUSD").qty == 3
    assert journal.get_order("1", "u-2") is None
    assert bad.status == OrderStatus.NEW and bad.filled_qty == 0


def test_a_group_that_raises_writes_nothing(journal):
    with pytest.raises(KeyError):
        with journal.group():
            journal.insert_orders([order("r-1")])
            journal.apply_fills(order("r-2", qty=2), [Fill("r-x", 2, 1.0, 1000)])
            raise KeyError("the turn failed")
    assert journal.get_order("1", "r-1") is None
    assert journal.fills("1") == []
    assert journal.position("1", "EURUSD").is_flat, "the position rolled back with the fill"
    with journal.group():  # and the journal works on
        assert journal.insert_orders([order("r-1")]) is True
    assert journal.get_order("1", "r-1") is not None
