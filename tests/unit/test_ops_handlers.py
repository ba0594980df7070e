"""Operator handlers in process: built from the account book, a real journal and the order
router (no engine loop), they return what to send and send nothing themselves."""
from __future__ import annotations

import pytest

from engine.accounts import AccountBook, AccountState
from engine.journal import Journal
from engine.market_data import MarketData
from engine.ops import Operations, Reply
from engine.orders import OrderRouter
from engine.supervisor import Supervisor
from maotrade.errors import InvalidOrder
from maotrade.messages import (ClientToEngine as FromClient, EngineToClient as ToClient, EngineToWorker as ToWorker,
                               WorkerToEngine as FromWorker, message)
from maotrade.order import OrderEvent

ACCOUNT = "7"


@pytest.fixture
def ops(tmp_path):
    accounts = AccountBook([{"idAccount": ACCOUNT, "brokerName": "test", "epicMapping": {"EURUSD": "EUR/USD"}}])
    accounts[ACCOUNT].capabilities = {"order_types": ["MARKET", "LIMIT"], "cancel": True}
    accounts[ACCOUNT].state = AccountState.READY
    journal = Journal(tmp_path / "journal.sqlite")
    sent = []
    ops = Operations(accounts, journal, tmp_path, Supervisor(), MarketData(accounts, lambda a, m: sent.append(m)))
    ops.attach(OrderRouter(journal, accounts, risk_check=ops.risk_check))
    yield ops
    assert sent == [], "handlers send nothing themselves"
    ops.close()
    journal.close()


def handle(ops: Operations, msg: dict, client: str = "cli:test") -> Reply:
    return ops.client_handlers()[msg["type"]](client, msg)


def place(ops: Operations, key: str, qty: float = 1, **fields):
    return ops.router.open({"account": ACCOUNT, "epic": "EURUSD", "qty": qty, "client_order_id": key, **fields},
                           source="strategy", strategy="s1")


def filled(ops: Operations, key: str, qty: float, price: float = 1.1) -> None:
    ops.router.apply_event(message(FromWorker.ORDER_EVENT, account=ACCOUNT, client_order_id=key,
                                   event=OrderEvent.FILLED,
                                   fill={"exec_id": f"{key}-x", "qty": abs(qty), "price": price, "time": 1,
                                         "commission": 0.0}))


def test_a_kill_switch_answers_the_client_and_publishes_the_event(ops):
    reply = handle(ops, message(FromClient.KILL_SWITCH, account=ACCOUNT, mode="halted"))
    [answer] = reply.to_client
    assert answer["type"] == ToClient.RISK and answer["risk"]["kill_switch"]["accounts"][ACCOUNT] == "halted"
    assert [(e["type"], e["account"], e["mode"]) for e in reply.events] == [(ToClient.KILL_SWITCH, ACCOUNT, "halted")]
    assert reply.dispatch == [] and reply.orders == []
    # The next order the router sees is refused by the risk check the handler just set.
    refused = place(ops, "k1")
    assert (refused.order.status, refused.code, refused.dispatches) == ("REJECTED", "kill_switch_halted", [])
    assert ops.journal.audit_log(ACCOUNT)[-1]["detail"]["by"] == "cli:test"


def test_an_order_refresh_returns_a_status_query_for_the_worker(ops):
    assert place(ops, "r1").order is not None
    reply = handle(ops, message(FromClient.ORDER_REFRESH, account=ACCOUNT, client_order_id="r1", request_id=4))
    assert [(d.kind, d.order.client_order_id) for d in reply.dispatch] == [(ToWorker.ORDER_STATUS_REQUEST, "r1")]
    [answer] = reply.to_client
    assert (answer["type"], answer["request_id"], answer["orders"][0]["client_order_id"]) == (ToClient.ORDERS, 4, "r1")


def test_an_order_refresh_for_an_account_not_ready_is_refused_and_nothing_is_asked(ops):
    place(ops, "r2")
    ops.accounts[ACCOUNT].state = AccountState.SYNCING
    with pytest.raises(InvalidOrder, match="account 7 is syncing"):
        handle(ops, message(FromClient.ORDER_REFRESH, account=ACCOUNT, client_order_id="r2"))


def test_an_account_request_reads_the_book(ops):
    [answer] = handle(ops, message(FromClient.ACCOUNT_REQUEST, account=ACCOUNT)).to_client
    assert (answer["type"], answer["account"], answer["state"], answer["broker"], answer["subscriptions"]) == (
        ToClient.ACCOUNT, ACCOUNT, AccountState.READY, "test", 0)
    assert answer["last_heard_s"] is None, "no worker was started"
    with pytest.raises(InvalidOrder, match="unknown account '8'"):
        handle(ops, message(FromClient.ACCOUNT_REQUEST, account="8"))


def test_cancel_all_returns_one_cancel_per_working_order_and_publishes_what_it_did(ops):
    place(ops, "c1", order_type="LIMIT", price=1.0)
    place(ops, "c2", order_type="LIMIT", price=1.0)
    reply = handle(ops, message(FromClient.CANCEL_ALL, account=ACCOUNT))
    assert [(d.kind, d.order.client_order_id) for d in reply.dispatch] == [
        (ToWorker.ORDER_CANCEL, "c1"), (ToWorker.ORDER_CANCEL, "c2")]
    [answer] = reply.to_client
    assert answer["type"] == ToClient.OPERATOR_ACTION and answer["by"] == "cli:test"
    assert [c["client_order_id"] for c in answer["cancelled"]] == ["c1", "c2"] and answer["refused"] == []
    assert reply.events == [answer]
    assert reply.orders == [], "a cancel's answer is the broker's event"


def test_cancel_all_on_an_account_not_ready_reports_every_order_refused_and_sends_nothing(ops):
    place(ops, "c3", order_type="LIMIT", price=1.0)
    ops.accounts[ACCOUNT].state = AccountState.RECONNECTING
    reply = handle(ops, message(FromClient.CANCEL_ALL, account=ACCOUNT))
    [answer] = reply.to_client
    assert answer["cancelled"] == [] and reply.dispatch == []
    assert [(r["client_order_id"], "reconnecting" in r["reason"]) for r in answer["refused"]] == [("c3", True)]


def test_flatten_sets_reduce_only_cancels_and_closes_at_market(ops):
    place(ops, "f1", qty=5)
    filled(ops, "f1", 5)
    place(ops, "f2", order_type="LIMIT", price=1.0)
    reply = handle(ops, message(FromClient.FLATTEN))
    [answer] = reply.to_client
    assert answer["kill_switch"] == "reduce_only" and answer["account"] is None
    assert [c["client_order_id"] for c in answer["cancelled"]] == ["f2"]
    [closing] = answer["closing"]
    assert (closing["epic"], closing["qty"]) == ("EURUSD", -5)
    assert [(d.kind, d.order.client_order_id) for d in reply.dispatch] == [
        (ToWorker.ORDER_CANCEL, "f2"), (ToWorker.ORDER_CLOSE, closing["client_order_id"])]
    assert [o.order.client_order_id for o in reply.orders] == [closing["client_order_id"]]
    assert [e["type"] for e in reply.events] == [ToClient.KILL_SWITCH, ToClient.OPERATOR_ACTION]
    assert ops.risk.mode(ACCOUNT) == "reduce_only"
