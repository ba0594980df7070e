"""The contract-suite rig of Kite works against a worker: faults it injects, and its record."""
from __future__ import annotations

from maotrade.messages import EngineToWorker as In
from tests.kit import WorkerHarness, wait_until
from tests.kite.rig import KiteRig


def test_rig_faults_and_record(tmp_path):
    rig = KiteRig(tmp_path / "rig", account="881").start()
    try:
        with WorkerHarness(rig.document(), tmp_path / "w") as worker:
            worker.wait_type("connection", state="connected", timeout=30)
            order = worker.order(rig.epic, rig.qty, order_type="LIMIT", price=1490.0)
            at = worker.request(In.ORDER_OPEN, order)
            worker.wait_order(order.client_order_id, "ACCEPTED", since=at)
            rig.fill(order.client_order_id, 2)
            worker.wait_order(order.client_order_id, "PARTIALLY_FILLED", since=at)
            assert rig.order(order.client_order_id) == {"status": "working", "filled": 2.0}
            rig.repeat_fill(order.client_order_id)
            rig.send_garbage()
            rig.move_price(1489.0)
            worker.wait_order(order.client_order_id, "FILLED", since=at)
            fills = [m["fill"] for m in worker.received if m.get("type") == "order_event" and m.get("fill")]
            assert sum(f["qty"] for f in fills) == rig.qty and rig.position() == rig.qty
            mark = len(worker.received)
            rig.go_down()
            worker.wait_type("connection", state="reconnecting", since=mark, timeout=20)
            rig.come_back()
            worker.wait_type("connection", state="connected", since=mark, timeout=30)
            wait_until(rig.connected, 30, what="ticker back")
            assert rig.times_received(order.client_order_id) == 1 and rig.orders_received() == 1
    finally:
        rig.stop()
