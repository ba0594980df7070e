"""Group commit in the engine loop, in process: a real engine's bus and journal, a real client.

Twenty orders that arrive in one frame are journaled in one transaction, and the frame
that sends them to the worker leaves only once that transaction is committed (a second
connection to the journal file sees all twenty when the worker's queue is flushed).
"""
import sqlite3

import zmq

from account_managers.paper.manager import PaperAccountManager
from engine.core import Engine
from engine.options import EngineOptions
from maotrade.client import EngineClient
from maotrade.messages import message
from maotrade.protocol import TO_WORKER
from maotrade.queues import MessageQueue
from tests.kit import paper_document, wait_until


def test_one_turn_journals_its_orders_in_one_commit_before_any_leaves(tmp_path, monkeypatch):
    engine = Engine([paper_document("900")], EngineOptions(data_dir=tmp_path, log_level="CRITICAL"), tmp_path)
    runtime = engine.accounts["900"]
    runtime.state, runtime.capabilities = "ready", dict(PaperAccountManager.CAPABILITIES)
    reader = sqlite3.connect(str(engine.journal.path))
    queue = engine.bus.open_worker_queue("900")
    committed_at_send = []
    real_flush = queue.flush

    def flush():
        if queue.pending:
            committed_at_send.append(reader.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
        return real_flush()

    monkeypatch.setattr(queue, "flush", flush)
    ctx = zmq.Context()
    worker = MessageQueue.receiver(ctx, engine.bus.worker_in_address("900"), TO_WORKER, bind=False, as_maps=True)
    client = EngineClient(engine.bus.client_address, name="grouped")
    try:
        before = engine.journal.commits
        for index in range(20):
            client.put(message("order_open", account="900", client_order_id=f"g{index}", epic="EURUSD", qty=1))
        client.flush()
        answers = []

        def answered():
            engine.turn(20)
            answers.extend(m for m in client.receive() if m.get("type") == "order")
            return len(answers) == 20

        wait_until(answered, 20, interval=0, what="20 order answers")
        # A frame the worker's socket could not take yet is tried again on the next turn: every
        # attempt, the first included, must find all twenty committed.
        assert committed_at_send and set(committed_at_send) == {20}, \
            "the worker's frame left only after all 20 were committed"
        assert engine.journal.commits == before + 1, "20 orders in one frame: one transaction"
        assert {a["status"] for a in answers} == {"NEW"}
        sent = []

        def delivered():
            engine.turn(0)  # a frame sent before the worker's socket connected is resent on a turn
            sent.extend(worker.drain())
            return len(sent) == 20

        wait_until(delivered, 10, what="20 orders at the worker")
        assert [m["order"]["client_order_id"] for m in sent] == [f"g{index}" for index in range(20)]
    finally:
        monkeypatch.undo()
        client.close(linger_ms=0)
        worker.close(linger_ms=0)
        engine.bus.close()
        engine.journal.close()
        reader.close()
        ctx.term()
