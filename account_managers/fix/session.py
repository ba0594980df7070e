"""The FIX 4.4 session layer of an initiator: TCP, Logon/Logout, heartbeats, sequence
numbers, gap detection and resends. It knows nothing about orders.

Threading: everything runs on the Account Manager's loop thread. ``logon`` blocks (it
runs inside ``on_account_manager_init``); afterwards the socket is non-blocking, the
loop calls ``on_readable`` when it has data and ``on_timer`` on every turn.

The application side is a ``SessionHandler``: it receives application messages in
sequence order (resent ones flagged ``poss_dup``) and hears about rejects and drops.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import time
from typing import Iterable, Optional, Protocol

import simplefix

from account_managers.fix.parsing import SESSION_REJECT_REASON, MsgType, Tag, text
from account_managers.fix.store import SessionStore
from maotrade.errors import AuthenticationError, BrokerUnavailable, OperationalError, ProtocolError

log = logging.getLogger(__name__)

# Header tags our encoder writes itself; the rest of a stored message is its body.
_HEADER_TAGS = frozenset({8, 9, 10, 34, 35, 43, 49, 52, 56, 97, 122})
_AUTH_WORDS = ("password", "username", "credential", "not authorized", "authentication")


class SessionHandler(Protocol):
    """What the session calls back (on the loop thread)."""

    def on_app_message(self, msg: simplefix.FixMessage, poss_dup: bool) -> None:
        """An application message arrived, in sequence."""

    def on_session_reject(self, ref_msg_type: Optional[str], ref_raw: Optional[bytes], reason: str) -> None:
        """The counterparty rejected one of our messages at session level (35=3)."""

    def on_disconnect(self, reason: str) -> None:
        """The session is down (socket closed, peer silent, logout)."""


class FixSession:
    """One FIX 4.4 initiator session over TCP, with sequence numbers kept in a ``SessionStore``."""

    def __init__(self, *, host: str, port: int, sender: str, target: str, heartbeat: float,
                 store: SessionStore, handler: SessionHandler, timeout: float = 10.0,
                 begin_string: str = "FIX.4.4", reset_on_logon: bool = False,
                 username: Optional[str] = None, password: Optional[str] = None,
                 grace: float = 0.2, tls_context: Optional[ssl.SSLContext] = None,
                 tls_server_name: Optional[str] = None):
        self.host, self.port = host, port
        # With a TLS context the whole session (Logon password included) is encrypted.
        self.tls_context = tls_context
        self.tls_server_name = tls_server_name or host
        self.sender, self.target = sender, target
        self.heartbeat = heartbeat
        self.store = store
        self.handler = handler
        self.timeout = timeout
        self.begin_string = begin_string
        self.reset_on_logon = reset_on_logon
        self._username, self._password = username, password
        self.grace = grace
        self.sock: Optional[socket.socket] = None
        self.logged_on = False
        self._parser = simplefix.FixParser()
        self._out = bytearray()
        self._queue: dict[int, Optional[simplefix.FixMessage]] = {}
        self._resend_until: Optional[int] = None  # highest seq a pending ResendRequest covers
        self._last_in = self._last_out = 0.0
        self._test_request: Optional[tuple[str, float]] = None
        self._logout_sent = False
        self._logout_text: Optional[str] = None
        self._test_counter = 0
        self._drop_reason: Optional[str] = None

    # ------------------------------------------------------------------ lifecycle
    def logon(self) -> None:
        """Connect and log on, blocking up to ``timeout``.

        Raises ``BrokerUnavailable`` when the acceptor cannot be reached or does not
        answer, ``AuthenticationError`` when it refuses our credentials and
        ``OperationalError`` when sequence numbers are beyond repair.
        """
        self.close()
        self._parser = simplefix.FixParser()
        self._out.clear()
        self._queue.clear()
        self._resend_until = None
        self._test_request = None
        self._logout_sent, self._logout_text = False, None
        self._drop_reason: Optional[str] = None
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self.tls_context is not None:
                self.sock = self.tls_context.wrap_socket(self.sock, server_hostname=self.tls_server_name)
        except ssl.SSLError as exc:
            self.close()
            raise BrokerUnavailable(f"TLS handshake with FIX acceptor {self.host}:{self.port} failed: "
                                    f"{exc.reason or exc}") from None
        except OSError as exc:
            self.close()
            raise BrokerUnavailable(f"cannot connect to FIX acceptor {self.host}:{self.port}: {exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.reset_on_logon:
            self.store.reset()
        fields = [(Tag.EncryptMethod, "0"), (Tag.HeartBtInt, str(int(round(self.heartbeat))))]
        if self.reset_on_logon:
            fields.append((Tag.ResetSeqNumFlag, "Y"))
        if self._username:
            fields.append((Tag.Username, self._username))
        if self._password:
            fields.append((Tag.Password, self._password))
        self._send(MsgType.LOGON, fields)
        deadline = time.monotonic() + self.timeout
        while not self.logged_on:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.sock is None:
                break
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError as exc:
                self.close()
                raise BrokerUnavailable(f"FIX logon to {self.host}:{self.port} failed: {exc}") from None
            if not data:
                break
            self._feed(data)
        if not self.logged_on:
            reason = self._logout_text or self._drop_reason or "no Logon answer"
            self.close()
            if any(word in reason.lower() for word in _AUTH_WORDS):
                raise AuthenticationError(f"FIX acceptor refused the logon: {reason}")
            if "seqnum too low" in reason.lower():
                # Our outgoing numbers are behind the broker's: retrying cannot fix that.
                raise OperationalError(f"FIX acceptor refused the logon: {reason}; sequence numbers "
                                       "must be reconciled with the broker (or set reset_on_logon)")
            raise BrokerUnavailable(f"FIX logon to {self.host}:{self.port} failed: {reason}")
        self.sock.setblocking(False)
        self._flush()
        log.info("event=fix_logon sender=%s target=%s next_out=%d next_in=%d",
                 self.sender, self.target, self.store.next_out, self.store.next_in)

    def logout(self, reason: str = "", wait: float = 2.0) -> None:
        """Send Logout, wait briefly for the answer, and close the socket."""
        if self.sock is None:
            return
        if self.logged_on and not self._logout_sent:
            self._logout_sent = True
            self._send(MsgType.LOGOUT, [(Tag.Text, reason)] if reason else [])
            deadline = time.monotonic() + wait
            try:
                self.sock.setblocking(True)
                while self.sock is not None and self.logged_on and time.monotonic() < deadline:
                    self._flush()
                    self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                    data = self.sock.recv(65536)
                    if not data:
                        break
                    self._feed(data)
            except OSError:
                pass  # the line broke while waiting for the Logout answer: close it anyway
        self.close()

    def close(self) -> None:
        """Close the socket without a Logout."""
        self.logged_on = False
        if self.sock is not None:
            with contextlib.suppress(OSError):  # already closed by the peer
                self.sock.close()
            self.sock = None

    def fileno(self) -> int:
        """The socket's file descriptor (-1 when closed)."""
        return self.sock.fileno() if self.sock is not None else -1

    # ------------------------------------------------------------------ loop hooks
    def on_readable(self) -> None:
        """Read what the socket has and process every complete message."""
        if self.sock is None:
            return
        try:
            data = self.sock.recv(65536)
            # TLS may hold decrypted bytes the file descriptor no longer signals.
            while data and isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                data += self.sock.recv(self.sock.pending())
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as exc:
            self._drop(f"socket error: {exc}")
            return
        if not data:
            self._drop(self._logout_text and f"logged out: {self._logout_text}" or
                       "connection closed by the acceptor")
            return
        self._feed(data)

    def on_timer(self, now: Optional[float] = None) -> None:
        """Send heartbeats and TestRequests when due; declare a silent peer dead."""
        if self.sock is None or not self.logged_on:
            return
        now = time.monotonic() if now is None else now
        self._flush()
        if self._test_request is not None:
            test_id, sent_at = self._test_request
            if now - sent_at >= self.heartbeat * (1 + self.grace):
                self._drop(f"peer silent: TestRequest {test_id} unanswered for "
                           f"{now - sent_at:.1f}s")
                return
        elif now - self._last_in >= self.heartbeat * (1 + self.grace):
            self._test_counter += 1
            test_id = f"TEST-{self._test_counter}-{int(time.time())}"
            self._test_request = (test_id, now)
            self._send(MsgType.TEST_REQUEST, [(Tag.TestReqID, test_id)])
        if now - self._last_out >= self.heartbeat:
            self._send(MsgType.HEARTBEAT, [])

    def send_app(self, msg_type: str, fields: Iterable[tuple]) -> int:
        """Send an application message; return its MsgSeqNum.

        The message is stored before it is written, so it can be resent on request
        even if the connection drops while it is in flight.
        """
        if self.sock is None or not self.logged_on:
            raise BrokerUnavailable("FIX session is not logged on")
        return self._send(msg_type, list(fields))

    # ------------------------------------------------------------------ sending
    def _header(self, msg_type: str, seq: int) -> simplefix.FixMessage:
        msg = simplefix.FixMessage()
        msg.append_pair(Tag.BeginString, self.begin_string, header=True)
        msg.append_pair(Tag.MsgType, msg_type, header=True)
        msg.append_pair(Tag.SenderCompID, self.sender, header=True)
        msg.append_pair(Tag.TargetCompID, self.target, header=True)
        msg.append_pair(Tag.MsgSeqNum, str(seq), header=True)
        return msg

    def _send(self, msg_type: str, fields: list[tuple]) -> int:
        seq = self.store.next_out
        msg = self._header(msg_type, seq)
        msg.append_utc_timestamp(Tag.SendingTime, precision=3, header=True)
        for tag, value in fields:
            if tag == Tag.TransactTime and value is None:
                msg.append_utc_timestamp(tag, precision=3)
            else:
                msg.append_pair(tag, value)
        raw = msg.encode()
        self.store.record_sent(seq, msg_type, None if msg_type in MsgType.ADMIN else raw)
        self._write(raw)
        return seq

    def _write(self, raw: bytes) -> None:
        self._out += raw
        self._last_out = time.monotonic()
        self._flush()

    def _flush(self) -> None:
        while self._out and self.sock is not None:
            try:
                sent = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                self._drop(f"write failed: {exc}")
                return
            del self._out[:sent]

    def _resend(self, begin: int, end: int) -> None:
        """Answer a ResendRequest: application messages again with PossDupFlag=Y and
        OrigSendingTime, every gap of admin messages as one SequenceReset-GapFill."""
        last = self.store.next_out - 1
        end = last if end == 0 or end > last else end
        log.info("event=fix_resend begin=%d end=%d", begin, end)
        gap_start: Optional[int] = None
        stored = {seq: raw for seq, _, raw in self.store.sent_between(begin, end)}
        for seq in range(begin, end + 1):
            raw = stored.get(seq)
            if raw is None:
                if gap_start is None:
                    gap_start = seq
                continue
            if gap_start is not None:
                self._gap_fill(gap_start, seq)
                gap_start = None
            self._write(self._as_poss_dup(raw))
        if gap_start is not None:
            self._gap_fill(gap_start, end + 1)

    def _gap_fill(self, seq: int, new_seq: int) -> None:
        msg = self._header(MsgType.SEQUENCE_RESET, seq)
        msg.append_pair(Tag.PossDupFlag, "Y", header=True)
        msg.append_utc_timestamp(Tag.SendingTime, precision=3, header=True)
        msg.append_pair(Tag.OrigSendingTime, _utc_now(), header=True)
        msg.append_pair(Tag.GapFillFlag, "Y")
        msg.append_pair(Tag.NewSeqNo, str(new_seq))
        self._write(msg.encode())

    def _as_poss_dup(self, raw: bytes) -> bytes:
        original = _parse_one(raw)
        msg = self._header(text(original, Tag.MsgType), int(original.get(Tag.MsgSeqNum)))
        msg.append_pair(Tag.PossDupFlag, "Y", header=True)
        msg.append_utc_timestamp(Tag.SendingTime, precision=3, header=True)
        msg.append_pair(Tag.OrigSendingTime, original.get(Tag.SendingTime), header=True)
        for tag, value in original.pairs:
            if int(tag) not in _HEADER_TAGS:
                msg.append_pair(tag, value)
        return msg.encode()

    # ------------------------------------------------------------------ receiving
    def _feed(self, data: bytes) -> None:
        self._parser.append_buffer(data)
        while self.sock is not None:
            try:
                msg = self._parser.get_message()
            except Exception as exc:  # simplefix raises several types on a garbled stream
                self._drop(f"garbled FIX stream ({type(exc).__name__}: {exc})")
                return
            if msg is None:
                return
            self._last_in = time.monotonic()
            try:
                self._receive(msg)
            except ProtocolError as exc:
                log.warning("event=fix_bad_message reason=%s msg=%s", exc, _printable(msg))

    def _receive(self, msg: simplefix.FixMessage) -> None:
        msg_type = text(msg, Tag.MsgType)
        seq_text = msg.get(Tag.MsgSeqNum)
        if msg_type is None or seq_text is None or not seq_text.isdigit():
            raise ProtocolError("message without MsgType or MsgSeqNum")
        if text(msg, Tag.SenderCompID) != self.target or text(msg, Tag.TargetCompID) != self.sender:
            self._session_reject(msg, "9", "CompID problem")
            self._send_logout_and_drop("CompID problem")
            return
        seq = int(seq_text)
        poss_dup = msg.get(Tag.PossDupFlag) == b"Y"
        expected = self.store.next_in
        if msg_type == MsgType.SEQUENCE_RESET and msg.get(Tag.GapFillFlag) != b"Y":
            self._sequence_reset(msg)  # reset mode ignores MsgSeqNum by definition
            return
        if msg_type == MsgType.LOGON and msg.get(Tag.ResetSeqNumFlag) == b"Y" and seq == 1:
            expected = 1
            self.store.set_next_in(1)
        if seq < expected:
            if poss_dup:
                return  # a duplicate we have processed already
            reason = f"MsgSeqNum too low, expecting {expected} but received {seq}"
            log.error("event=fix_seq_too_low expected=%d received=%d", expected, seq)
            self._send_logout_and_drop(reason)
            raise OperationalError(f"FIX session {self.sender}->{self.target}: {reason}; "
                                   "sequence numbers must be reconciled with the broker")
        if seq > expected:
            self._queue[seq] = msg
            if msg_type in (MsgType.LOGON, MsgType.RESEND_REQUEST, MsgType.LOGOUT):
                self._admin(msg, msg_type)  # these are honoured before the gap is filled
                self._queue[seq] = None
            if self._resend_until is None or self._resend_until < expected:
                log.info("event=fix_gap expected=%d received=%d action=resend_request", expected, seq)
                self._resend_until = seq
                self._send(MsgType.RESEND_REQUEST, [(Tag.BeginSeqNo, str(expected)), (Tag.EndSeqNo, "0")])
            return
        self._process(msg, msg_type, seq, poss_dup)
        while self.store.next_in in self._queue:
            queued = self._queue.pop(self.store.next_in)
            if queued is None:
                self.store.set_next_in(self.store.next_in + 1)
                continue
            self._process(queued, text(queued, Tag.MsgType), int(queued.get(Tag.MsgSeqNum)),
                          queued.get(Tag.PossDupFlag) == b"Y")

    def _process(self, msg: simplefix.FixMessage, msg_type: str, seq: int, poss_dup: bool) -> None:
        if msg_type == MsgType.SEQUENCE_RESET:  # GapFill
            new_seq = int(msg.get(Tag.NewSeqNo) or 0)
            self.store.set_next_in(max(new_seq, seq + 1))
            return
        self.store.set_next_in(seq + 1)
        if poss_dup and msg.get(Tag.OrigSendingTime) is None and msg_type not in MsgType.ADMIN:
            self._session_reject(msg, "1", "OrigSendingTime missing on a PossDup message",
                                 ref_tag=Tag.OrigSendingTime)
            return
        if msg_type in MsgType.ADMIN:
            self._admin(msg, msg_type)
        else:
            self.handler.on_app_message(msg, poss_dup)

    def _admin(self, msg: simplefix.FixMessage, msg_type: str) -> None:
        if msg_type == MsgType.HEARTBEAT:
            if self._test_request and text(msg, Tag.TestReqID) == self._test_request[0]:
                self._test_request = None
        elif msg_type == MsgType.TEST_REQUEST:
            self._send(MsgType.HEARTBEAT, [(Tag.TestReqID, text(msg, Tag.TestReqID) or "")])
        elif msg_type == MsgType.RESEND_REQUEST:
            self._resend(int(msg.get(Tag.BeginSeqNo) or 1), int(msg.get(Tag.EndSeqNo) or 0))
        elif msg_type == MsgType.REJECT:
            ref = int(msg.get(Tag.RefSeqNum) or 0)
            sent = self.store.sent_message(ref)
            why = SESSION_REJECT_REASON.get(text(msg, Tag.SessionRejectReason) or "", "")
            reason = "; ".join(filter(None, [text(msg, Tag.Text), why,
                                             f"tag {text(msg, Tag.RefTagID)}" if msg.get(Tag.RefTagID) else ""]))
            log.warning("event=fix_session_reject ref_seq=%d reason=%s", ref, reason)
            self.handler.on_session_reject(sent[0] if sent else text(msg, Tag.RefMsgType),
                                           sent[1] if sent else None, reason or "session reject")
        elif msg_type == MsgType.LOGOUT:
            self._logout_text = text(msg, Tag.Text) or "logout"
            if not self._logout_sent and self.logged_on:
                self._logout_sent = True
                self._send(MsgType.LOGOUT, [])
                self._drop(f"logged out by the acceptor: {self._logout_text}")
            else:
                self.logged_on = False
        elif msg_type == MsgType.LOGON:
            if self.logged_on:
                return  # a second Logon in session: nothing to do
            hb = msg.get(Tag.HeartBtInt)
            if hb and hb.isdigit() and int(hb) > 0 and int(hb) != int(round(self.heartbeat)):
                log.info("event=fix_heartbeat_changed ours=%s theirs=%s", self.heartbeat, hb)
            self.logged_on = True

    def _sequence_reset(self, msg: simplefix.FixMessage) -> None:
        new_seq = int(msg.get(Tag.NewSeqNo) or 0)
        if new_seq < self.store.next_in:
            self._session_reject(msg, "5", f"NewSeqNo {new_seq} below expected {self.store.next_in}",
                                 ref_tag=Tag.NewSeqNo)
            return
        log.warning("event=fix_sequence_reset from=%d to=%d", self.store.next_in, new_seq)
        self._queue = {k: v for k, v in self._queue.items() if k >= new_seq}
        self.store.set_next_in(new_seq)

    def _session_reject(self, msg: simplefix.FixMessage, reason: str, words: str,
                        ref_tag: Optional[int] = None) -> None:
        fields = [(Tag.RefSeqNum, (msg.get(Tag.MsgSeqNum) or b"0").decode()),
                  (Tag.RefMsgType, text(msg, Tag.MsgType) or "")]
        if ref_tag:
            fields.append((Tag.RefTagID, str(ref_tag)))
        fields += [(Tag.SessionRejectReason, reason), (Tag.Text, words)]
        log.warning("event=fix_reject_sent ref_seq=%s reason=%s", fields[0][1], words)
        self._send(MsgType.REJECT, fields)

    def _send_logout_and_drop(self, reason: str) -> None:
        if not self._logout_sent:
            self._logout_sent = True
            self._send(MsgType.LOGOUT, [(Tag.Text, reason)])
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        self._drop_reason = reason
        was_up = self.sock is not None
        self.close()
        if was_up:
            log.warning("event=fix_session_down reason=%s", reason)
            self.handler.on_disconnect(reason)


def _utc_now() -> str:
    now = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"


def _parse_one(raw: bytes) -> simplefix.FixMessage:
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    msg = parser.get_message()
    if msg is None:
        raise ProtocolError("stored message cannot be parsed")
    return msg


def _printable(msg: simplefix.FixMessage) -> str:
    """A one-line rendering of a message with Password (554) masked."""
    return "|".join(f"{int(t)}={'***' if int(t) == Tag.Password else v.decode('utf-8', 'replace')}"
                    for t, v in msg.pairs)[:300]
