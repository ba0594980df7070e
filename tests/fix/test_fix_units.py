"""Parts of the FIX broker tested alone: parsing, settings, and the session against a scripted peer."""
from __future__ import annotations

import select
import socket
import threading
import time

import pytest
import simplefix

from account_managers.fix import parsing as fx
from account_managers.fix.config import FIXAccountSettings, FIXBrokerSettings
from account_managers.fix.session import FixSession
from account_managers.fix.store import SessionStore
from maotrade.config import parse_settings
from maotrade.errors import BrokerUnavailable, ConfigError, ProtocolError
from maotrade.order import BaseOrder


def message(*pairs) -> simplefix.FixMessage:
    msg = simplefix.FixMessage()
    for tag, value in pairs:
        msg.append_pair(tag, value)
    return msg


def test_new_order_single_for_a_stop_sell():
    order = BaseOrder(client_order_id="c1", account="1", epic="ES_FUT", qty=-2.5, order_type="STOP",
                      price=95.25, time_in_force="DAY")
    fields = dict(fx.new_order_single(order, "c1", "ES-202412-FUT-CME", "ACC"))
    assert fields[fx.Tag.Side] == "2" and fields[fx.Tag.OrderQty] == "2.5"
    assert fields[fx.Tag.OrdType] == "3" and fields[fx.Tag.StopPx] == "95.25"
    assert fields[fx.Tag.TimeInForce] == "0" and fx.Tag.Price not in fields
    assert fields[fx.Tag.Symbol] == "ES-202412-FUT-CME" and fields[fx.Tag.Account] == "ACC"


def test_execution_report_parses_and_names_a_missing_tag():
    base = [(35, "8"), (37, "O1"), (11, "c1"), (150, "F"), (39, "1"), (31, "100.5"), (32, "3"),
            (14, "3"), (6, "100.5"), (60, "20241201-10:00:01.250")]
    report = fx.parse_execution_report(message(*base, (17, "E9")))
    assert (report.kind, report.status, report.last_qty, report.exec_id) == ("trade", "PARTIALLY_FILLED", 3, "E9")
    assert report.transact_time == 1733047201250
    with pytest.raises(ProtocolError, match="tag 17"):
        fx.parse_execution_report(message(*base))
    with pytest.raises(ProtocolError, match="ExecType 'Z'"):
        fx.parse_execution_report(message((35, "8"), (37, "O1"), (17, "E1"), (150, "Z"), (39, "0")))
    with pytest.raises(ProtocolError, match="tag 32 is not a number"):
        fx.parse_execution_report(message(*[(t, "x" if t == 32 else v) for t, v in base], (17, "E9")))


def test_market_data_entries_give_a_price():
    snapshot = message((35, "W"), (262, "r"), (55, "S"), (268, "2"), (269, "0"), (270, "99.5"),
                       (271, "1"), (269, "1"), (270, "100.5"), (271, "1"))
    entries = fx.md_entries(snapshot)
    assert [e[fx.Tag.MDEntryType] for e in entries] == ["0", "1"]
    assert fx.md_price(entries) == 100.0
    incremental = message((35, "X"), (268, "1"), (279, "0"), (269, "2"), (55, "S"), (270, "101"), (271, "4"))
    assert fx.md_price(fx.md_entries(incremental)) == 101.0


def test_settings_name_bad_keys_and_mask_the_password():
    with pytest.raises(ConfigError, match="unknown key 'hots'"):
        parse_settings(FIXBrokerSettings, {"host": "h", "hots": "x", "port": 1, "sender_comp_id": "A",
                                           "target_comp_id": "B"}, "brokerConfig")
    with pytest.raises(ConfigError, match="fix_version"):
        parse_settings(FIXBrokerSettings, {"host": "h", "port": 1, "sender_comp_id": "A",
                                           "target_comp_id": "B", "fix_version": "FIX.4.2"}, "brokerConfig")
    settings = parse_settings(FIXBrokerSettings, {"host": "127.0.0.1", "port": 1, "sender_comp_id": "A",
                                                  "target_comp_id": "B"}, "brokerConfig")
    assert settings.heartbeat_interval == 30 and settings.reset_on_logon is False
    account = FIXAccountSettings(account="ACC", username="u", password="hunter2")
    assert "hunter2" not in repr(account) and "hunter2" not in str(account)


class _Handler:
    def __init__(self):
        self.drops = []

    def on_app_message(self, msg, poss_dup):
        raise AssertionError("no application message expected")

    def on_session_reject(self, *args):
        raise AssertionError("no reject expected")

    def on_disconnect(self, reason):
        self.drops.append(reason)


def test_garbage_instead_of_logon_fails_with_a_clear_reason(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"8=FIX.4.4\x019=5\x01abc=def\x0110=000\x01")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    store = SessionStore(tmp_path / "s.sqlite")
    session = FixSession(host="127.0.0.1", port=server.getsockname()[1], sender="C", target="B",
                         heartbeat=1, store=store, handler=_Handler(), timeout=3)
    with pytest.raises(BrokerUnavailable, match="garbled FIX stream"):
        session.logon()
    assert store.next_out == 2  # the Logon we sent used number 1 for good
    thread.join(5)
    server.close()
    store.close()


def test_position_report_nets_long_and_short():
    report = message((35, "AP"), (710, "pos-1"), (55, "ES-202412-FUT-CME"), (702, "2"),
                     (703, "TQ"), (704, "5"), (705, "0"), (703, "SOD"), (704, "0"), (705, "2"))
    assert fx.position_report(report) == ("ES-202412-FUT-CME", 3.0)


class ScriptedPeer:
    """A one-connection acceptor on loopback that the test scripts message by message."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.conn = None
        self.parser = simplefix.FixParser()
        self.seq = 1

    def accept(self):
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)

    def receive(self) -> simplefix.FixMessage:
        while True:
            msg = self.parser.get_message()
            if msg is not None:
                return msg
            self.parser.append_buffer(self.conn.recv(4096))

    def send(self, msg_type: str, *fields, seq=None):
        msg = simplefix.FixMessage()
        msg.append_pair(8, "FIX.4.4")
        msg.append_pair(35, msg_type)
        msg.append_pair(49, "B")
        msg.append_pair(56, "C")
        msg.append_pair(34, seq or self.seq)
        msg.append_utc_timestamp(52)
        for tag, value in fields:
            msg.append_pair(tag, value)
        self.conn.sendall(msg.encode())
        self.seq = (seq or self.seq) + 1

    def readable(self) -> bool:
        """True when the session has sent something not yet received."""
        return bool(select.select([self.conn], [], [], 0.01)[0])

    def close(self):
        for sock in (self.conn, self.server):
            if sock is not None:
                sock.close()


class _Recorder(_Handler):
    def __init__(self):
        super().__init__()
        self.app, self.rejects = [], []

    def on_app_message(self, msg, poss_dup):
        self.app.append((fx.text(msg, 17), poss_dup))

    def on_session_reject(self, ref_type, raw, reason):
        self.rejects.append((ref_type, raw, reason))


def _logged_on_session(tmp_path, peer, handler):
    store = SessionStore(tmp_path / "s.sqlite")
    session = FixSession(host="127.0.0.1", port=peer.port, sender="C", target="B", heartbeat=30,
                         store=store, handler=handler, timeout=3)
    seen = []

    def answer_logon():
        peer.accept()
        seen.append(fx.text(peer.receive(), 35))
        peer.send("A", (98, "0"), (108, "30"))

    thread = threading.Thread(target=answer_logon)
    thread.start()
    session.logon()
    thread.join(5)
    assert session.logged_on and seen == ["A"]
    return session, store


def _pump(session, until, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        session.on_readable()
    assert until()


def test_session_reject_names_our_message_and_gap_asks_for_a_resend(tmp_path):
    peer, handler = ScriptedPeer(), _Recorder()
    try:
        session, store = _logged_on_session(tmp_path, peer, handler)
        seq = session.send_app("D", [(11, "c1"), (55, "S"), (54, "1"), (60, None), (38, "1"), (40, "1")])
        assert fx.text(peer.receive(), 35) == "D"
        peer.send("3", (45, str(seq)), (373, "5"), (371, "38"), (58, "bad qty"))
        _pump(session, lambda: handler.rejects)
        ref_type, raw, reason = handler.rejects[0]
        assert ref_type == "D" and b"11=c1" in raw and "bad qty" in reason and "tag 38" in reason
        # Messages 3 and 4 are lost; 5 arrives: we ask from 3, then apply 3, 4, 5 in order.
        peer.send("8", (17, "E5"), seq=5)
        _pump(session, peer.readable)
        request = peer.receive()
        assert (fx.text(request, 35), fx.text(request, 7), fx.text(request, 16)) == ("2", "3", "0")
        assert handler.app == []
        peer.send("8", (17, "E3"), (43, "Y"), (122, "20240101-00:00:00"), seq=3)
        peer.send("4", (123, "Y"), (36, "5"), (43, "Y"), seq=4)
        _pump(session, lambda: len(handler.app) == 2)
        assert handler.app == [("E3", True), ("E5", False)]
        assert store.next_in == 6
        # A duplicate of something already seen, flagged PossDup, is dropped.
        peer.send("8", (17, "E3"), (43, "Y"), (122, "20240101-00:00:00"), seq=3)
        peer.send("0", seq=6)
        _pump(session, lambda: store.next_in == 7)
        assert handler.app == [("E3", True), ("E5", False)]
    finally:
        peer.close()


def test_resend_request_replays_orders_and_gap_fills_admin(tmp_path):
    peer, handler = ScriptedPeer(), _Recorder()
    try:
        session, store = _logged_on_session(tmp_path, peer, handler)  # our Logon was 1
        session.send_app("D", [(11, "c1"), (55, "S"), (54, "1"), (60, None), (38, "1"), (40, "1")])  # 2
        first = peer.receive()
        session._send("0", [])  # 3: an admin message, never replayed
        peer.receive()
        peer.send("2", (7, "1"), (16, "0"))
        _pump(session, lambda: store.next_in == 3)
        replies = [peer.receive() for _ in range(3)]
        kinds = [(fx.text(m, 35), fx.text(m, 34), fx.text(m, 43), fx.text(m, 36)) for m in replies]
        assert kinds == [("4", "1", "Y", "2"), ("D", "2", "Y", None), ("4", "3", "Y", "4")]
        assert fx.text(replies[1], 122) == fx.text(first, 52) and fx.text(replies[1], 11) == "c1"
    finally:
        peer.close()
