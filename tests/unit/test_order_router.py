"""The engine's order router in process, against a real journal in a temporary SQLite file.

Each test feeds the router client requests and broker events as the engine loop would and
checks the one state machine's result, the journal and what the router asks to send.
"""
from __future__ import annotations

import pytest

from engine.accounts import AccountBook, AccountState
from engine.journal import Journal
from engine.orders import NEVER_REACHED, OrderRouter
from maotrade.errors import InvalidOrder, ProtocolError
from maotrade.messages import EngineToWorker as ToWorker, WorkerToEngine, message
from maotrade.order import BracketKind, OrderEvent, OrderStatus

ACCOUNT = "7"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def journal(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    yield journal
    journal.close()


def make_router(journal, bracket=BracketKind.ATTACHED, clock=None, ready=True):
    capabilities = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": True, "stop_amend": True,
                    "bracket": bracket}
    accounts = AccountBook([{"idAccount": ACCOUNT, "brokerName": "test", "epicMapping": {"EURUSD": "EUR/USD"}}])
    runtime = accounts[ACCOUNT]
    runtime.capabilities = capabilities
    runtime.state = AccountState.READY if ready else AccountState.SYNCING
    return OrderRouter(journal, accounts, unknown_timeout=30.0, clock=clock or Clock())


def event(order_id, kind, **fields):
    return message(WorkerToEngine.ORDER_EVENT, account=ACCOUNT, client_order_id=order_id, event=kind, **fields)


def fill(exec_id, qty, price):
    return {"exec_id": exec_id, "qty": qty, "price": price, "time": 1, "commission": 0.0}


def open_bracket(router, qty=1000, stop_loss=1.05, take_profit=1.15):
    outcome = router.open({"account": ACCOUNT, "epic": "EURUSD", "qty": qty, "client_order_id": "p1",
                           "stop_loss": stop_loss, "take_profit": take_profit}, source="strategy", strategy="s1")
    return outcome


def test_a_bracket_is_journaled_with_both_legs_and_only_the_parent_is_sent(journal):
    router = make_router(journal)
    outcome = open_bracket(router)
    assert [(d.kind, d.order.client_order_id) for d in outcome.dispatches] == [(ToWorker.ORDER_OPEN, "p1")]
    assert outcome.order.epicBroker == "EUR/USD", "the instrument is resolved once, by the engine"
    stop, target = router.legs(outcome.order)
    assert (stop.client_order_id, stop.order_type, stop.price, stop.qty, stop.action) == (
        "p1/SL", "STOP", 1.05, -1000, "close")
    assert (target.client_order_id, target.order_type, target.price) == ("p1/TP", "LIMIT", 1.15)
    assert journal.get_order(ACCOUNT, "p1/SL").parent == "p1"
    assert router.owner(stop) == "s1", "a leg belongs to whoever placed its parent"


def test_a_fill_counts_once_however_often_the_broker_repeats_it(journal):
    router = make_router(journal)
    open_bracket(router, stop_loss=None, take_profit=None)
    first = router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 400, 1.1)))
    again = router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 400, 1.1)))
    status = router.apply_event(event("p1", OrderEvent.STATUS, status="PARTIALLY_FILLED",
                                      fills=[fill("e1", 400, 1.1)]))
    assert [len(o.fills) for o in (first, again, status)] == [1, 0, 0]
    order = router.get(ACCOUNT, "p1")
    assert (order.status, order.filled_qty) == (OrderStatus.PARTIALLY_FILLED, 400)
    assert journal.position(ACCOUNT, "EURUSD").qty == 400


def test_an_overfill_from_the_broker_is_refused_and_changes_nothing(journal):
    router = make_router(journal)
    open_bracket(router, stop_loss=None, take_profit=None)
    with pytest.raises(InvalidOrder, match="exceeds the remaining"):
        router.apply_event(event("p1", OrderEvent.STATUS, status="FILLED",
                                 fills=[fill("a", 600, 1.1), fill("b", 600, 1.1)]))
    order = router.get(ACCOUNT, "p1")
    assert (order.status, order.filled_qty, order.fills) == (OrderStatus.NEW, 0, [])
    assert journal.fills(ACCOUNT) == [] and journal.position(ACCOUNT, "EURUSD").is_flat


def test_a_leg_fill_flattens_the_position_and_ends_the_other_leg(journal):
    router = make_router(journal)
    open_bracket(router)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    outcome = router.apply_event(event("p1/SL", OrderEvent.FILLED, fill=fill("e2", 1000, 1.05)))
    assert router.get(ACCOUNT, "p1/SL").status == OrderStatus.FILLED
    target = router.get(ACCOUNT, "p1/TP")
    assert (target.status, target.reason) == (OrderStatus.CANCELLED, "stop loss filled")
    assert [o.client_order_id for o in outcome.changed] == ["p1/TP"]
    assert journal.position(ACCOUNT, "EURUSD").is_flat


def test_amending_a_closed_bracket_is_refused_and_nothing_is_sent(journal):
    router = make_router(journal)
    open_bracket(router)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    router.apply_event(event("p1/SL", OrderEvent.FILLED, fill=fill("e2", 1000, 1.05)))
    with pytest.raises(InvalidOrder, match="its bracket is closed .*nothing was sent"):
        router.amend_stops(ACCOUNT, "p1", 1.04, 1.2)


def test_amending_a_working_bracket_moves_its_legs_when_the_broker_agrees(journal):
    router = make_router(journal)
    open_bracket(router)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    outcome = router.amend_stops(ACCOUNT, "p1", 1.07, 1.2)
    assert [(d.kind, d.order.stop_loss) for d in outcome.dispatches] == [(ToWorker.ORDER_STOP, 1.07)]
    assert router.get(ACCOUNT, "p1/SL").price == 1.05, "nothing moves before the broker says so"
    router.apply_event(event("p1", OrderEvent.AMENDED, stop_loss=1.07, take_profit=1.2, request=ToWorker.ORDER_STOP))
    assert (router.get(ACCOUNT, "p1/SL").price, router.get(ACCOUNT, "p1/TP").price) == (1.07, 1.2)


def test_a_close_by_the_strategy_ends_the_legs_of_the_position(journal):
    router = make_router(journal)
    open_bracket(router)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    close = router.close({"account": ACCOUNT, "epic": "EURUSD", "client_order_id": "c1"}, source="strategy")
    assert close.dispatch.kind == ToWorker.ORDER_CLOSE and close.order.qty == -1000
    outcome = router.apply_event(event("c1", OrderEvent.FILLED, fill=fill("e2", 1000, 1.11)))
    assert {o.client_order_id: o.status for o in outcome.changed} == {
        "p1/SL": OrderStatus.CANCELLED, "p1/TP": OrderStatus.CANCELLED}
    assert outcome.dispatches == [], "attached levels go with the position: nothing to withdraw"


def test_legs_that_are_broker_orders_are_withdrawn_when_the_position_closes(journal):
    router = make_router(journal, bracket=BracketKind.ORDERS)
    open_bracket(router)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    router.apply_event(event("p1/SL", OrderEvent.ACCEPTED, broker_ref="9"))
    router.close({"account": ACCOUNT, "epic": "EURUSD", "client_order_id": "c1"}, source="strategy")
    outcome = router.apply_event(event("c1", OrderEvent.FILLED, fill=fill("e2", 1000, 1.11)))
    assert sorted((d.kind, d.order.client_order_id) for d in outcome.dispatches) == [
        (ToWorker.ORDER_CANCEL, "p1/SL"), (ToWorker.ORDER_CANCEL, "p1/TP")]


def test_without_native_brackets_the_engine_places_the_legs_after_the_fill(journal):
    router = make_router(journal, bracket=False)
    [sent] = open_bracket(router).dispatches
    assert (sent.order.stop_loss, sent.order.take_profit) == (None, None), "the broker gets a plain order"
    outcome = router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    sent = {d.order.client_order_id: d for d in outcome.dispatches}
    assert set(sent) == {"p1/SL", "p1/TP"} and {d.kind for d in sent.values()} == {ToWorker.ORDER_OPEN}
    assert (sent["p1/SL"].order.order_type, sent["p1/SL"].order.qty) == ("STOP", -1000)
    router.apply_event(event("p1/SL", OrderEvent.ACCEPTED))
    router.apply_event(event("p1/TP", OrderEvent.ACCEPTED))
    done = router.apply_event(event("p1/TP", OrderEvent.FILLED, fill=fill("e2", 1000, 1.15)))
    assert [(d.kind, d.order.client_order_id) for d in done.dispatches] == [(ToWorker.ORDER_CANCEL, "p1/SL")]
    assert router.get(ACCOUNT, "p1/SL").status == OrderStatus.ACCEPTED, "ended only when the broker says so"


def test_an_order_the_broker_never_saw_is_rejected_never_resent(journal):
    router = make_router(journal)
    open_bracket(router, stop_loss=None, take_profit=None)
    router.apply_event(event("p1", OrderEvent.SUBMITTED))
    outcome = router.apply_event(event("p1", OrderEvent.NOT_FOUND, request=ToWorker.ORDER_STATUS_REQUEST))
    assert (outcome.order.status, outcome.order.reason) == (OrderStatus.REJECTED, NEVER_REACHED)
    assert outcome.dispatches == []


def test_a_close_refused_before_reaching_the_broker_is_rejected(journal):
    router = make_router(journal)
    open_bracket(router, stop_loss=None, take_profit=None)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    router.close({"account": ACCOUNT, "epic": "EURUSD", "client_order_id": "c1"}, source="strategy")
    outcome = router.apply_event(event("c1", OrderEvent.REFUSED, request=ToWorker.ORDER_CLOSE,
                                       reason="IG positions could not be read; no close was sent"))
    assert (outcome.order.status, outcome.error) == (OrderStatus.REJECTED, outcome.order.reason)


def test_a_silent_broker_makes_the_order_unknown_once_after_the_timeout(journal):
    clock = Clock()
    router = make_router(journal, clock=clock)
    open_bracket(router, stop_loss=None, take_profit=None)
    clock.now += 29
    assert router.overdue() == []
    clock.now += 2
    [late] = router.overdue()
    assert (late.status, late.reason) == (OrderStatus.UNKNOWN, "no answer from the broker within 30s")
    assert router.overdue() == [], "told once"
    assert journal.get_order(ACCOUNT, "p1").status == OrderStatus.UNKNOWN
    settled = router.apply_event(event("p1", OrderEvent.STATUS, status="FILLED", fills=[fill("e1", 1000, 1.1)]))
    assert settled.order.status == OrderStatus.FILLED


def test_after_a_restart_the_legs_of_a_traded_parent_are_asked_about(journal):
    router = make_router(journal)
    open_bracket(router)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    restarted = make_router(journal)
    assert sorted(o.client_order_id for o in restarted.orders_to_query(ACCOUNT)) == ["p1/SL", "p1/TP"]
    restarted.apply_event(event("p1/SL", OrderEvent.FILLED, fill=fill("e2", 1000, 1.05)))
    assert journal.position(ACCOUNT, "EURUSD").is_flat


def test_an_event_for_an_order_nobody_sent_needs_a_description(journal):
    router = make_router(journal)
    with pytest.raises(ProtocolError, match="carries no description"):
        router.apply_event(event("ghost", OrderEvent.FILLED, fill=fill("x", 1, 1.0)))
    external = router.apply_event(event("ghost", OrderEvent.FILLED, fill=fill("x", 1, 1.0), order={
        "client_order_id": "ghost", "account": ACCOUNT, "epic": "EURUSD", "qty": 1}))
    assert (external.order.source, external.order.status) == ("external", OrderStatus.FILLED)


def test_listed_orders_carry_every_fill(journal):
    router = make_router(journal)
    open_bracket(router, stop_loss=None, take_profit=None)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 400, 1.1)))
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e2", 600, 1.2)))
    [listed] = journal.list_orders(account=ACCOUNT)
    assert [f["exec_id"] for f in listed.fills] == ["e1", "e2"]
    assert listed.status == OrderStatus.FILLED


def test_an_instrument_outside_the_mapping_is_refused_before_anything_is_sent(journal):
    router = make_router(journal)
    outcome = router.open({"account": ACCOUNT, "epic": "NOPE", "qty": 1, "client_order_id": "n1"},
                          source="strategy")
    assert (outcome.code, outcome.dispatches) == ("unknown_instrument", [])
    assert outcome.order.status == OrderStatus.REJECTED and "'NOPE'" in outcome.error


def test_a_client_may_not_name_an_order_like_a_leg(journal):
    router = make_router(journal)
    outcome = router.open({"account": ACCOUNT, "epic": "EURUSD", "qty": 1, "client_order_id": "x/SL"},
                          source="strategy")
    assert outcome.order.status == OrderStatus.REJECTED and "bracket leg" in outcome.error


def test_a_leg_the_engine_places_that_the_broker_never_got_is_placed_once_it_says_so(journal):
    router = make_router(journal, bracket=False)
    open_bracket(router, take_profit=None)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    restarted = make_router(journal, bracket=False)
    [leg] = restarted.orders_to_query(ACCOUNT)
    outcome = restarted.apply_event(event("p1/SL", OrderEvent.NOT_FOUND, request=ToWorker.ORDER_STATUS_REQUEST))
    assert [(d.kind, d.order.client_order_id) for d in outcome.dispatches] == [(ToWorker.ORDER_OPEN, "p1/SL")]
    assert restarted.get(ACCOUNT, "p1/SL").status == OrderStatus.NEW


def test_a_working_order_the_broker_could_not_be_asked_about_keeps_its_state_and_is_asked_again(journal):
    clock = Clock()
    router = make_router(journal, clock=clock)
    open_bracket(router, stop_loss=None, take_profit=None)
    router.apply_event(event("p1", OrderEvent.ACCEPTED, broker_ref="D1"))
    outcome = router.apply_event(event("p1", OrderEvent.UNKNOWN, reason="IG could not be asked",
                                       request=ToWorker.ORDER_STATUS_REQUEST))
    assert outcome.order.status == OrderStatus.ACCEPTED and "could not be asked" in outcome.error
    assert router.due_rechecks() == []
    asked = []
    for _ in range(60):
        clock.now += 1
        asked += [clock.now - 1000 for _ in router.due_rechecks()]
    assert asked == [5, 15, 35], "soon at first, then less often, at most every unknown-timeout"
    router.apply_event(event("p1", OrderEvent.CANCELLED, reason="cancelled at IG"))
    clock.now += 31
    assert router.due_rechecks() == []


def test_an_amend_of_engine_placed_legs_moves_each_and_answers_once_all_have(journal):
    router = make_router(journal, bracket=False)
    open_bracket(router)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    for leg in ("p1/SL", "p1/TP"):
        router.apply_event(event(leg, OrderEvent.ACCEPTED))
    outcome = router.amend_stops(ACCOUNT, "p1", 1.07, 1.2)
    assert sorted((d.kind, d.order.client_order_id, d.order.price) for d in outcome.dispatches) == [
        (ToWorker.ORDER_STOP, "p1/SL", 1.07), (ToWorker.ORDER_STOP, "p1/TP", 1.2)]
    first = router.apply_event(event("p1/SL", OrderEvent.AMENDED, price=1.07, request=ToWorker.ORDER_STOP))
    assert first.amended_parent is None
    last = router.apply_event(event("p1/TP", OrderEvent.AMENDED, price=1.2, request=ToWorker.ORDER_STOP))
    assert (last.amended_parent.stop_loss, last.amended_parent.take_profit, last.error) == (1.07, 1.2, "")


def test_a_legs_late_placement_answer_does_not_answer_an_amend_of_it(journal):
    # The amend can reach the engine before the answer to the leg's own placement: that
    # answer says nothing of the amend, so the parent is answered only once the leg is moved.
    router = make_router(journal, bracket=False)
    open_bracket(router)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    router.apply_event(event("p1/SL", OrderEvent.ACCEPTED))
    router.amend_stops(ACCOUNT, "p1", 1.07, 1.2)
    assert router.apply_event(event("p1/TP", OrderEvent.ACCEPTED)).amended_parent is None
    assert router.apply_event(event("p1/SL", OrderEvent.AMENDED, price=1.07,
                                    request=ToWorker.ORDER_STOP)).amended_parent is None
    last = router.apply_event(event("p1/TP", OrderEvent.AMENDED, price=1.2, request=ToWorker.ORDER_STOP))
    assert (last.amended_parent.stop_loss, last.amended_parent.take_profit, last.error) == (1.07, 1.2, "")


def test_an_attached_leg_the_broker_no_longer_shows_while_the_position_is_open_keeps_its_fill(journal):
    # IG drops a position's stop when the stop fires; a status answer read just after that,
    # before the fill's stream update, finds no leg. The leg may have filled: it is not
    # cancelled, it is asked about again, and the fill that follows is its own.
    clock = Clock()
    router = make_router(journal, clock=clock)
    open_bracket(router, qty=-1000, stop_loss=1.15, take_profit=1.05)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", -1000, 1.1)))
    for leg in ("p1/SL", "p1/TP"):
        router.apply_event(event(leg, OrderEvent.ACCEPTED, request=ToWorker.ORDER_STATUS_REQUEST))
    for leg in ("p1/SL", "p1/TP"):
        router.apply_event(event(leg, OrderEvent.NOT_FOUND, request=ToWorker.ORDER_STATUS_REQUEST))
        assert router.get(ACCOUNT, leg).status == OrderStatus.UNKNOWN and "may have fired" in router.get(
            ACCOUNT, leg).reason
    clock.now += 5
    assert sorted(o.client_order_id for o in router.due_rechecks()) == ["p1/SL", "p1/TP"]
    outcome = router.apply_event(event("p1/SL", OrderEvent.FILLED, fill=fill("sl1", 1000, 1.15)))
    assert outcome.order.status == OrderStatus.FILLED and outcome.order.filled_qty == 1000
    assert journal.get_order(ACCOUNT, "p1/TP").status == OrderStatus.CANCELLED
    assert journal.position(ACCOUNT, "EURUSD").is_flat


def test_a_leg_the_broker_keeps_not_finding_is_placed_again_once_then_unknown(journal):
    router = make_router(journal, bracket=False)
    open_bracket(router, take_profit=None)
    router.apply_event(event("p1", OrderEvent.FILLED, fill=fill("e1", 1000, 1.1)))
    restarted = make_router(journal, bracket=False)
    restarted.orders_to_query(ACCOUNT)
    first = restarted.apply_event(event("p1/SL", OrderEvent.NOT_FOUND, request=ToWorker.ORDER_STATUS_REQUEST))
    assert [d.kind for d in first.dispatches] == [ToWorker.ORDER_OPEN]
    again = restarted.apply_event(event("p1/SL", OrderEvent.NOT_FOUND, request=ToWorker.ORDER_OPEN))
    assert again.dispatches == [], "a leg the broker keeps not finding is not sent round and round"
    leg = restarted.get(ACCOUNT, "p1/SL")
    assert leg.status == OrderStatus.UNKNOWN and "unprotected" in leg.reason
    assert journal.get_order(ACCOUNT, "p1/SL").status == OrderStatus.UNKNOWN


def test_live_orders_index_legs_by_instrument():
    from engine.orders import LiveOrders
    from maotrade.order import BaseOrder, Leg, child_id
    live = LiveOrders()
    parent = BaseOrder(client_order_id="lp", account=ACCOUNT, epic="EURUSD", qty=1)
    leg = BaseOrder(client_order_id=child_id("lp", Leg.STOP_LOSS), account=ACCOUNT, epic="EURUSD", qty=-1,
                    parent="lp", leg=Leg.STOP_LOSS)
    other = BaseOrder(client_order_id=child_id("lq", Leg.TAKE_PROFIT), account=ACCOUNT, epic="GBPUSD", qty=-1,
                      parent="lq", leg=Leg.TAKE_PROFIT)
    for order in (parent, leg, other):
        live[(ACCOUNT, order.client_order_id)] = order
    assert live.legs_in(ACCOUNT, "EURUSD") == [leg], "the parent is no leg; GBPUSD's leg is elsewhere"
    assert live.legs_in("8", "EURUSD") == []
    live[(ACCOUNT, leg.client_order_id)] = leg  # written again: still one entry
    assert live.legs_in(ACCOUNT, "EURUSD") == [leg]
    assert live.pop((ACCOUNT, leg.client_order_id)) is leg
    assert live.legs_in(ACCOUNT, "EURUSD") == [] and live.pop((ACCOUNT, "nope"), "x") == "x"
    assert set(live) == {(ACCOUNT, "lp"), (ACCOUNT, other.client_order_id)}


def test_a_fill_writes_its_order_once(journal, monkeypatch):
    router = make_router(journal)
    router.open({"account": ACCOUNT, "epic": "EURUSD", "qty": 5, "client_order_id": "once"}, source="strategy")
    writes = []
    real = journal.save_order
    monkeypatch.setattr(journal, "save_order", lambda order, strategy="": writes.append(order.status) or
                        real(order, strategy))
    router.apply_event(event("once", OrderEvent.FILLED, status=OrderStatus.FILLED, broker_ref="B1",
                             fill=fill("x-once", 5, 1.1)))
    assert writes == [OrderStatus.FILLED], "the fills' transaction wrote it; nothing moved after"
    back = journal.get_order(ACCOUNT, "once")
    assert back.status == OrderStatus.FILLED and back.broker_ref == "B1" and back.filled_qty == 5
