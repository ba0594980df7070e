"""Guarantee 8: malformed, truncated or hostile input is refused with a reason and counted;
nothing escapes, nothing already journaled is corrupted. Property-based (hypothesis)."""
from __future__ import annotations

import json
import sqlite3

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from account_managers.paper import PaperAccountManager
from engine.bus import ClientSession
from engine.core import Engine
from engine.options import EngineOptions
from maotrade.config import parse_document
from maotrade.errors import ConfigError, ProtocolError
from maotrade.messages import ClientToEngine, EngineToWorker, WorkerToEngine, unpack_batch
from maotrade.protocol import CHANNELS, FROM_WORKER, TO_WORKER, encode, from_worker
from maotrade.protocol.bar_block import expand_blocks
from maotrade.queues import MessageQueue
from tests import faultstats
from tests.kit import paper_document, wait_until

pytestmark = pytest.mark.fault
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True),
                    st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
ORDER_KEYS = ["client_order_id", "account", "epic", "qty", "status", "fills", "exec_id", "price", "order_type"]
order_like = st.dictionaries(st.sampled_from(ORDER_KEYS), values, max_size=8)


FIELDS = ["order", "fill", "fills", "request", "info", "portfolio", "epic", "time_frame", "state", "reason",
          "close", "client_order_id", "qty", "id", "action", "refused", "unknown", "not_found", "positions"]
fields = st.dictionaries(st.sampled_from(FIELDS), st.one_of(values, order_like), max_size=6)


def public_values(cls):
    return [v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, str)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz")
    document = {**paper_document("900"), "capabilities": {}}
    engine = Engine([document], EngineOptions(data_dir=data, log_level="CRITICAL"), data)
    engine.accounts["900"].state = "ready"
    yield engine
    engine.bus.close()
    engine.journal.close()


EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("kind", public_values(WorkerToEngine) + ["junk"])
@EXAMPLES
@given(body=fields, account=st.sampled_from(["900", "900", "900", "nope", 900]))
def test_engine_survives_any_worker_message(engine, kind, body, account):
    faultstats.record(faults=1)
    engine._on_worker_batch([{**body, "type": kind, "account": account}])


@pytest.mark.parametrize("kind", [t for t in public_values(ClientToEngine) if t != ClientToEngine.STOP_ENGINE] + ["junk"])
@EXAMPLES
@given(body=fields, account=st.sampled_from(["900", "900", "nope", None]))
def test_engine_survives_any_client_message(engine, kind, body, account):
    faultstats.record(faults=1)
    session = ClientSession(b"fuzzer", "fuzzer")
    engine._guard(engine._on_client_message, {**body, "type": kind, "account": account}, session)


def test_a_block_with_a_bad_row_reaches_its_listener_without_that_row(engine):
    session = ClientSession(b"listener", "listener")
    engine.market_data.subscribe(session, {"account": "900", "epic": "EURUSD", "time_frame": 60}, 0.0)
    try:
        bars = msgpack.packb([[0, 1.0, 1.0, 1.0, 1.1, 0.0], [1, "x", 1.0, 1.0, 1.2, 0.0], [2, 1.0, 1.0, 1.0, 1.3, 0.0]])
        malformed = engine.malformed_worker_messages
        engine._on_worker_batch([{"type": WorkerToEngine.MARKET_DATA_BLOCK, "v": 1, "account": "900",
                                  "epic": "EURUSD", "time_frame": 60, "completed": True, "bars": bars}])
        assert engine.malformed_worker_messages == malformed + 1
        assert [bar["date"] for bar in expand_blocks(session.take_frame())] == [0, 2]
        assert engine.accounts["900"].last_price["EURUSD"] == 1.3
    finally:
        engine.market_data.drop(session)


def test_journal_is_intact_after_fuzzing(engine):
    db = sqlite3.connect(str(engine.journal.path))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for (data,) in db.execute("SELECT data FROM orders"):
        assert isinstance(json.loads(data)["qty"], (int, float))
    exec_ids = db.execute("SELECT account, exec_id FROM fills").fetchall()
    assert len(exec_ids) == len(set(exec_ids))
    db.close()
    assert engine.malformed_worker_messages > 0, "the fuzzer should have produced refused messages"


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    ctx = zmq.Context()
    data = tmp_path_factory.mktemp("paperfuzz")
    inbound = MessageQueue.receiver(ctx, "inproc://fuzz-in", TO_WORKER, bind=True)
    feeder = MessageQueue.sender(ctx, "inproc://fuzz-in", bind=False)
    outbound = MessageQueue.sender(ctx, "inproc://fuzz-out", bind=True)
    sink = MessageQueue.receiver(ctx, "inproc://fuzz-out", FROM_WORKER, bind=False)
    manager = PaperAccountManager({**paper_document("901"), "runtime": {"data_dir": str(data)}}, inbound, outbound)
    assert manager._run_init()
    yield manager, feeder, sink
    manager.on_account_manager_shutdown()
    for queue in (inbound, feeder, outbound, sink):
        queue.close(linger_ms=0)
    ctx.term()


@pytest.mark.parametrize("kind", [t for t in public_values(EngineToWorker) if t != EngineToWorker.SHUTDOWN] + ["junk"])
@EXAMPLES
@given(body=fields)
def test_account_manager_survives_any_engine_message(paper, kind, body):
    manager, feeder, sink = paper
    faultstats.record(faults=1)
    feeder.send({**body, "type": kind})
    assert manager.in_queue.wait(5000)
    manager._serve_requests()
    manager.out_queue.flush()
    assert manager.is_connected
    if TO_WORKER.decode(encode([{**body, "type": kind}])).refused:
        # Refused at decode time: answered with an error naming the request, never dropped silently.
        answers = []
        wait_until(lambda: answers.extend(sink.drain()) or any(
            isinstance(a, from_worker.Error) and a.request == kind for a in answers), 5, what="the error answer")
    sink.drain()


@FUZZ
@given(frame=st.one_of(st.binary(max_size=200), values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
                       st.lists(st.one_of(fields, values), max_size=4).map(lambda v: msgpack.packb(v))))
def test_every_channel_decodes_into_its_structs_or_refuses_in_one_line(frame):
    faultstats.record(faults=1)
    for channel in CHANNELS:
        try:
            messages, refused = channel.decode(frame)
        except ProtocolError as exc:
            assert "\n" not in str(exc)
            continue
        assert all(type(m) in channel.messages for m in messages)
        assert all(r.reason and "\n" not in r.reason for r in refused)
        # Whatever decoded encodes again and decodes to the same structs.
        assert channel.decode(encode(messages)).messages == messages


@FUZZ
@given(frame=st.one_of(st.binary(max_size=200), values.map(lambda v: msgpack.packb(v, use_bin_type=True))))
def test_frame_decoder_returns_messages_or_protocol_error(frame):
    faultstats.record(faults=1)
    try:
        batch = unpack_batch(frame)
    except ProtocolError:
        return
    assert all(isinstance(m, dict) and isinstance(m["type"], str) for m in batch)


@FUZZ
@given(document=st.one_of(values, st.dictionaries(
    st.sampled_from(["idAccount", "brokerName", "brokerClass", "brokerConfig", "accountConfig", "epicMapping", "x"]),
    values, max_size=7)))
def test_config_documents_parse_or_fail_in_one_line(document):
    try:
        parse_document(document)
    except ConfigError as exc:
        assert "\n" not in str(exc)
