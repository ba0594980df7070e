"""``EngineClient.request`` correlates answers by ``request_id``, and ``engine_info`` reads
engine.json once, against a real ROUTER socket on a free loopback port."""
from __future__ import annotations

import json
import threading

import pytest
import zmq

from maotrade.client import EngineClient, engine_address, engine_info
from maotrade.errors import ConfigError, ProtocolError, TemporaryError
from maotrade.messages import ClientToEngine as FromClient, EngineToClient as ToClient, message, pack_batch, \
    unpack_batch


@pytest.fixture
def router():
    ctx = zmq.Context()
    socket = ctx.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    yield socket, f"tcp://127.0.0.1:{port}"
    socket.close()
    ctx.term()


def receive(socket) -> tuple[bytes, list[dict]]:
    assert socket.poll(5000), "the client sent nothing"
    identity, frame = socket.recv_multipart()
    return identity, unpack_batch(frame)


def test_a_late_answer_to_a_timed_out_request_is_not_taken_for_the_next_one(router):
    socket, address = router
    client = EngineClient(address)
    try:
        with pytest.raises(TemporaryError):
            client.request(message(FromClient.STATUS_REQUEST), ToClient.STATUS, timeout=0.2)
        identity, [first] = receive(socket)
        # Before the second request, the engine answers the first one, late.
        socket.send_multipart([identity, pack_batch([message(ToClient.STATUS, status="old",
                                                             request_id=first["request_id"])])])
        client.put(message(FromClient.STATUS_REQUEST, request_id="mine"))  # sent with the next request
        sent = {}

        def answer_second():
            _, batch = receive(socket)
            sent.update(batch[-1])
            socket.send_multipart([identity, pack_batch([message(ToClient.STATUS, status="new",
                                                                 request_id=batch[-1]["request_id"])])])

        thread = threading.Thread(target=answer_second)
        thread.start()
        answer = client.request(message(FromClient.STATUS_REQUEST), ToClient.STATUS, timeout=5)
        thread.join(5)
        assert answer["status"] == "new"
        assert answer["request_id"] == sent["request_id"] != first["request_id"]
        # The late answer was kept, not lost: whoever reads next sees it.
        assert [m["status"] for m in client.receive(0)] == ["old"]
    finally:
        client.close(linger_ms=0)


def test_a_refusal_of_the_request_raises_with_the_engines_reason(router):
    socket, address = router
    client = EngineClient(address)
    try:
        def refuse():
            identity, batch = receive(socket)
            socket.send_multipart([identity, pack_batch([message(ToClient.ERROR, reason="unknown account '9'",
                                                                 request=batch[0]["type"],
                                                                 request_id=batch[0]["request_id"])])])

        thread = threading.Thread(target=refuse)
        thread.start()
        with pytest.raises(ProtocolError, match="unknown account '9'"):
            client.request(message(FromClient.ACCOUNT_REQUEST, account="9"), ToClient.ACCOUNT, timeout=5)
        thread.join(5)
    finally:
        client.close(linger_ms=0)


def test_a_refused_request_sent_before_raises_even_when_the_main_one_is_answered(router):
    socket, address = router
    client = EngineClient(address)
    try:
        def answer():
            identity, [cancel, listing] = receive(socket)
            assert cancel["request_id"] != listing["request_id"], "each message is numbered"
            # The engine answers a refused cancel of a known order as that order with its error.
            socket.send_multipart([identity, pack_batch([
                message(ToClient.ORDER, client_order_id="c1", request=FromClient.ORDER_CANCEL,
                        error="order c1 is FILLED", request_id=cancel["request_id"]),
                message(ToClient.ORDERS, orders=[], request_id=listing["request_id"])])])

        thread = threading.Thread(target=answer)
        thread.start()
        with pytest.raises(ProtocolError, match="refused order_cancel: order c1 is FILLED"):
            client.request(message(FromClient.ORDERS_REQUEST, account="7"), ToClient.ORDERS, timeout=5,
                           before=[message(FromClient.ORDER_CANCEL, account="7", client_order_id="c1")])
        thread.join(5)
    finally:
        client.close(linger_ms=0)


def test_engine_info_names_what_is_missing_or_wrong(tmp_path):
    with pytest.raises(ConfigError, match="no engine is running"):
        engine_info(tmp_path)
    (tmp_path / "engine.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not an engine.json"):
        engine_info(tmp_path)
    (tmp_path / "engine.json").write_text(json.dumps({"pid": 1, "client_address": "ipc:///x", "accounts": ["7"]}))
    assert engine_address(tmp_path) == "ipc:///x"
    assert engine_info(tmp_path)["accounts"] == ["7"]
