"""Review findings H1, M7, L6: hostile bus frames never stop the engine or flood its log."""
from __future__ import annotations

import zmq

from engine.bus import EngineBus
from maotrade.errors import ProtocolError, TemporaryError
from maotrade.messages import MAX_FRAME_BYTES, message, pack_batch, unpack_batch
from maotrade.protocol import FROM_WORKER
from maotrade.queues import MessageQueue
from tests.engine_kit import EngineProcess
from tests.kit import wait_until

DEPTH_BOMB = b"\x91" * 1000 + b"\xc0"  # an array nested 1,000 deep: 1,001 bytes


def test_h1_a_deeply_nested_frame_is_a_protocol_error():
    try:
        unpack_batch(DEPTH_BOMB)
    except ProtocolError as exc:
        assert "nested too deep" in str(exc)
    else:
        raise AssertionError("the depth bomb decoded")


def test_h1_depth_bomb_from_a_bus_client_leaves_the_engine_running(tmp_path):
    engine = EngineProcess(tmp_path / "engine", ["123"])
    try:
        engine.wait_ready("123")
        engine.client.socket.send(DEPTH_BOMB)
        answer = engine.client.request(message("status_request"), "status", timeout=10)["status"]
        assert answer["accounts"][0]["account"] == "123"
        assert engine.process.poll() is None
        assert engine.interrupt() == 0
    finally:
        engine.kill()


def test_h1_depth_bomb_on_the_worker_path_is_counted_not_raised(tmp_path):
    ctx = zmq.Context()
    address = f"ipc://{tmp_path}/w.out"
    receiver = MessageQueue.receiver(ctx, address, FROM_WORKER, name="workers", as_maps=True)
    sender = ctx.socket(zmq.PUSH)
    sender.connect(address)
    try:
        sender.send(DEPTH_BOMB)
        sender.send(b"\x91" + b"\x83\xa4type\xa9heartbeat\xa1v\x01\xa7account\xa11")
        got = []
        wait_until(lambda: got.extend(receiver.drain()) or got, 10, what="the good frame")
        assert got == [{"type": "heartbeat", "v": 1, "account": "1", "time": 0, "state": "", "pending": 0}]
        assert receiver.malformed == 1
    finally:
        sender.close(0)
        receiver.close(0)
        ctx.term()


def test_m7_every_bus_socket_caps_frames_before_buffering(tmp_path):
    bus = EngineBus(tmp_path, tcp_address="tcp://127.0.0.1:*", data_dir=tmp_path)
    try:
        queue = bus.open_worker_queue("1")
        sockets = [bus.from_workers.socket, queue.socket, bus.pub, *bus.routers]
        assert all(s.getsockopt(zmq.MAXMSGSIZE) == MAX_FRAME_BYTES for s in sockets)
    finally:
        bus.close()


def test_l6_a_frame_of_100000_bad_messages_writes_a_bounded_log(tmp_path):
    engine = EngineProcess(tmp_path / "engine", ["123"])
    try:
        engine.wait_ready("123")
        engine.client._outbox = [{"type": "x", "v": 1}] * 100_000
        engine.client.flush()
        def all_counted():
            try:
                return engine.status()["engine"]["malformed_messages"] >= 100_000
            except TemporaryError:  # busy answering 100,000 refusals: ask again
                return False

        wait_until(all_counted, 120, interval=0.5, what="all refusals counted")
        assert engine.interrupt() == 0
    finally:
        engine.kill()
    log_text = (tmp_path / "engine" / "logs" / "maotrade.log").read_text()
    assert log_text.count("event=message_rejected") <= 50


def test_a_malformed_client_message_is_refused_at_decode_and_answered_naming_the_field(tmp_path):
    bus = EngineBus(tmp_path)
    client = zmq.Context.instance().socket(zmq.DEALER)
    client.connect(bus.client_address)
    try:
        good = {"type": "status_request", "v": 1}
        bad = {"type": "order_open", "v": 1, "epic": "EURUSD", "qty": "100", "request_id": 7}
        client.send(pack_batch([good, bad, good]))
        got = []
        wait_until(lambda: got.extend(bus.receive_clients()) or len(got) >= 2, 10, what="the good messages")
        assert [msg for _, msg in got] == [good, good]
        assert bus.malformed_client_frames == 1
        session = got[0][0]
        assert session.take_frame() == [{"type": "error", "v": 1, "request": "order_open", "request_id": 7,
                                         "reason": "order_open: expected `float`, got `str` at `qty`"}]
    finally:
        client.close(0)
        bus.close()
