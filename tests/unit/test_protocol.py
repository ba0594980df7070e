"""The bus vocabulary: typed structs, decode-time refusals, and docs/PROTOCOL.md kept in step."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import msgspec
import pytest

from maotrade import messages
from maotrade.errors import ProtocolError
from maotrade.order import BaseOrder, OrderEvent
from maotrade.protocol import (CHANNELS, FROM_CLIENT, FROM_WORKER, MAX_FRAME_BYTES, MAX_NESTING, TO_CLIENT,
                               TO_WORKER, FillData, OrderData, as_dict, encode, from_client, from_worker, to_worker)
from maotrade.protocol.doc import problems, update

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def frame(*maps) -> bytes:
    return msgspec.msgpack.encode(list(maps))


# -- docs/PROTOCOL.md -------------------------------------------------------------------
def test_protocol_md_tables_are_generated_from_the_structs():
    text = PROTOCOL_MD.read_text()
    assert update(text, CHANNELS) == text, "docs/PROTOCOL.md is not current: run scripts/protocol_doc"


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.name)
def test_every_field_is_documented_and_nothing_documented_is_missing(channel):
    assert problems(channel) == []


def test_the_order_event_table_lists_exactly_the_events_a_worker_may_send():
    text = PROTOCOL_MD.read_text()
    table = text[text.index("| `event` | meaning |"):]
    table = table[:table.index("\n\n")]
    first_cells = re.findall(r"^\| (.+?) \|", table, re.M)[2:]  # after the header and its rule
    documented = {name for cell in first_cells for name in re.findall(r"`([a-z_]+)`", cell)}
    assert documented == set(typing.get_args(from_worker.OrderEventName)) == OrderEvent.ALL


# -- one vocabulary ------------------------------------------------------------------------
@pytest.mark.parametrize("names, channel", [
    (messages.EngineToWorker, TO_WORKER), (messages.WorkerToEngine, FROM_WORKER),
    (messages.ClientToEngine, FROM_CLIENT), (messages.EngineToClient, TO_CLIENT)])
def test_every_message_name_is_the_tag_of_a_struct(names, channel):
    constants = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    assert constants == set(channel.by_type)


def test_message_types_are_unique_within_each_direction():
    for channel in CHANNELS:
        assert len(channel.by_type) == len(channel.messages)


def test_the_order_struct_carries_exactly_the_orders_fields():
    assert set(OrderData.__struct_fields__) == {f.name for f in dataclasses.fields(BaseOrder)}
    order = BaseOrder(client_order_id="a-1", account="7", epic="EURUSD", qty=-2.0, stop_loss=1.1)
    order.fills = [{"exec_id": "x1", "qty": 1.0, "price": 1.2, "time": 5, "commission": 0.1}]
    assert BaseOrder.from_wire(order.to_wire(with_fills=True)) == order


# -- decoding: where malformed input is refused ---------------------------------------------
def test_a_good_frame_decodes_into_structs_and_back():
    sent = [to_worker.OrderOpen(order=OrderData(client_order_id="a", account="1", epic="E", qty=1.0,
                                                fills=[FillData(exec_id="f", qty=1.0, price=2.0)])),
            to_worker.Shutdown()]
    messages_, refused = TO_WORKER.decode(encode(sent))
    assert messages_ == sent and refused == []


def test_a_single_map_is_a_batch_of_one():
    decoded = FROM_CLIENT.decode(msgspec.msgpack.encode({"type": "status_request", "v": 1}))
    assert decoded.messages == [from_client.StatusRequest()]


@pytest.mark.parametrize("bad, reason", [
    ({"type": "launch_missiles"}, "unknown message type 'launch_missiles'"),
    ({"type": "order_open", "epic": "E", "qty": "1"}, "order_open: expected `float`, got `str` at `qty`"),
    ({"type": "order_open", "epic": "E"}, "order_open: object missing required field `qty`"),
    ({"type": "subscribe", "epic": "E", "time_frame": True}, "subscribe: expected `int`, got `bool` at `time_frame`"),
    ({"type": "kill_switch", "mode": "off"}, "kill_switch: invalid enum value 'off' at `mode`"),
    ({"v": 1}, "message: object missing required field `type`"),
])
def test_a_malformed_message_is_refused_alone_with_a_one_line_reason(bad, reason):
    good = {"type": "status_request", "v": 1}
    decoded = FROM_CLIENT.decode(frame(good, bad, good))
    assert decoded.messages == [from_client.StatusRequest()] * 2
    assert [r.reason for r in decoded.refused] == [reason]
    assert decoded.refused[0].type == bad.get("type", "")


def test_a_free_form_map_nested_too_deep_is_refused():
    deep: object = 1
    for _ in range(MAX_NESTING + 1):
        deep = {"x": deep}
    ok = {"type": "account_info", "account": "1", "info": {"balance": 1.0}}
    decoded = FROM_WORKER.decode(frame(ok, {**ok, "info": deep}))
    assert len(decoded.messages) == 1
    assert decoded.refused[0].reason == f"account_info: `info` nests deeper than {MAX_NESTING} levels"


@pytest.mark.parametrize("raw, reason", [
    (b"\x91" * 1000 + b"\xc0", "nested too deep"),
    (b"\xc1", "undecodable frame"),
    (msgspec.msgpack.encode("hello"), "frame is a str, not an array of messages"),
    (msgspec.msgpack.encode([{"type": "bye"}, 7]), "message 1 of the frame is a int, not a map"),
    (b"\x00" * (MAX_FRAME_BYTES + 1), f"exceeds {MAX_FRAME_BYTES}"),
])
def test_a_malformed_frame_is_refused_whole(raw, reason):
    for channel in CHANNELS:
        with pytest.raises(ProtocolError, match=re.escape(reason)):
            channel.decode(raw)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    decoded = FROM_CLIENT.decode(frame({"type": "hello", "name": "s", "colour": "blue"}))
    assert decoded.messages == [from_client.Hello(name="s")] and decoded.refused == []


def test_client_requests_leave_defaults_out_so_absent_means_default():
    assert as_dict(from_client.OrderOpen(epic="E", qty=1.0)) == {"type": "order_open", "v": 1, "epic": "E",
                                                                 "qty": 1.0}
    bar = from_worker.MarketData(account="1", epic="E", time_frame=1, date=0, open=1.0, high=1.0, low=1.0,
                                 close=1.0, volume=0.0, completed=False)
    assert "replay_seq" not in as_dict(bar) and as_dict(bar)["completed"] is False
