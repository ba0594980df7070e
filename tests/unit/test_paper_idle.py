"""The paper broker in-process: idle instruments cost nothing, and a turn's record is one commit."""
import time

import pytest
import zmq

from account_managers.paper.manager import PaperAccountManager
from maotrade.order import BaseOrder
from maotrade.protocol import TO_WORKER
from maotrade.queues import MessageQueue
from tests.kit import paper_document


@pytest.fixture
def paper(tmp_path):
    ctx = zmq.Context()
    in_queue = MessageQueue.receiver(ctx, f"ipc://{tmp_path}/in", TO_WORKER)
    out_queue = MessageQueue.sender(ctx, f"ipc://{tmp_path}/out", bind=True)
    document = {**paper_document(price_interval=0.25), "runtime": {"data_dir": str(tmp_path)}}
    manager = PaperAccountManager(document, in_queue, out_queue)
    manager.on_account_manager_init()
    yield manager
    manager.on_account_manager_shutdown()
    in_queue.close(0)
    out_queue.close(0)
    ctx.term()


def mids(manager):
    return {epic: walk.mid for epic, walk in manager.walks.items()}


def steps(manager, count, start_ms):
    for index in range(count):
        manager.account_manager_main(start_ms + index * 250)


def test_only_watched_instruments_are_stepped(paper):
    before = mids(paper)
    now = int(time.time() * 1000)
    steps(paper, 5, now)
    assert mids(paper) == before, "no subscription, order or stop: nothing moves on the timer"
    paper.do_async_request_market_data({"action": "subscribe", "epic": "EURUSD", "epicBroker": "EURUSD",
                                        "time_frame": 1})
    steps(paper, 5, now + 5 * 250)
    after = mids(paper)
    assert after["EURUSD"] != before["EURUSD"]
    assert {e: m for e, m in after.items() if e != "EURUSD"} == {e: m for e, m in before.items() if e != "EURUSD"}


def test_an_idle_instrument_catches_up_when_an_order_needs_it(paper):
    before = paper.walks["SPY"].mid
    paper._stepped_at["SPY"] -= 10_000  # as if nobody had watched SPY for the last 10 s
    order = BaseOrder(client_order_id="idle-1", account=paper.account_id, epic="SPY", epicBroker="SPY", qty=1)
    paper.do_async_request_order_open(order)
    assert paper.walks["SPY"].mid != before, "the 40 steps SPY missed are taken in one draw"
    assert order.status == "FILLED"
    assert order.fills[0]["price"] == pytest.approx(paper.walks["SPY"].ask)


def test_idle_account_sleeps_until_its_heartbeat(paper):
    assert paper.longest_wait() >= paper.settings.heartbeat_interval
    paper.do_async_request_market_data({"action": "subscribe", "epic": "EURUSD", "epicBroker": "EURUSD",
                                        "time_frame": 1})
    paper.account_manager_main(int(time.time() * 1000))
    assert paper.longest_wait() <= paper.settings.price_interval


def test_one_commit_per_turn_and_nothing_reported_before_it(paper, monkeypatch):
    saves = []
    real_save = paper.store.save
    monkeypatch.setattr(paper.store, "save", lambda book, orders, **kw: saves.append(
        sorted(o.client_order_id for o in orders)) or real_save(book, orders, **kw))
    sent = []
    monkeypatch.setattr(paper.out_queue, "flush", lambda: sent.append(list(saves)) or True)
    for key in ("turn-1", "turn-2", "turn-3"):
        order = BaseOrder(client_order_id=key, account=paper.account_id, epic="EURUSD", epicBroker="EURUSD",
                          qty=1)
        paper.do_async_request_order_open(order)
    assert saves == [], "nothing is written while the turn runs"
    paper._send_queued()
    assert saves == [["turn-1", "turn-2", "turn-3"]]
    assert sent == [saves], "the turn's record was written before its messages were sent"
    assert set(paper.store.load(paper.book)) >= {"turn-1", "turn-2", "turn-3"}
