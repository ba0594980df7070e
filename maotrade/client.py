"""A client of the engine's ROUTER socket: what strategies, the CLI and scripts use.

One DEALER socket. Outgoing messages queue with ``put`` and leave as one frame on
``flush``; ``request`` sends one message and waits for the answer of a given type.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Optional

import zmq

from maotrade.errors import ProtocolError, TemporaryError
from maotrade.messages import unpack_batch
from maotrade.protocol import MAX_FRAME_BYTES, Message, encode, from_client, to_client


CLIENT_RCVHWM = 8  # frames (of at most a few thousand messages each)


class EngineClient:
    """Connection to a running engine (one owner thread)."""

    def __init__(self, address: str, name: str = "", ctx: Optional[zmq.Context] = None,
                 curve: Optional[dict] = None):
        """Connect to ``address``. Over tcp, ``curve`` is required: ``{"server_public":
        bytes, "public": bytes, "secret": bytes}`` (Z85 keys, as made by ``maotrade keys``)."""
        self.address = address
        self.name = name
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self.socket.setsockopt(zmq.LINGER, 2000)
        # A bounded queue: a client that reads slowly pushes back on the engine, which then
        # conflates its market data instead of buffering without limit.
        self.socket.setsockopt(zmq.RCVHWM, CLIENT_RCVHWM)
        if curve:
            self.socket.curve_serverkey = curve["server_public"]
            self.socket.curve_publickey = curve["public"]
            self.socket.curve_secretkey = curve["secret"]
        self.socket.connect(address)
        self._outbox: list[dict] = []
        self._inbox: list[dict] = []
        self.malformed = 0

    def put(self, msg: Message) -> None:
        """Queue a message (a ``maotrade.protocol.from_client`` struct) for the next flush."""
        self._outbox.append(msg)

    def flush(self) -> None:
        """Send what is queued as one frame (blocks only if the engine is not reading)."""
        if self._outbox:
            frame = encode(self._outbox)
            self._outbox = []
            self.socket.send(frame)

    def send(self, msg: Message) -> None:
        """Send one message now."""
        self.put(msg)
        self.flush()

    def receive(self, timeout_ms: int = 0) -> list[dict]:
        """Return messages received, waiting up to ``timeout_ms`` for the first one."""
        out, self._inbox = self._inbox, []
        if not out and timeout_ms and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return out
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                out.extend(unpack_batch(frame))
            except ProtocolError:
                self.malformed += 1

    def request(self, msg: Message, answer_type: str, timeout: float = 5.0,
                match: Optional[Callable[[dict], bool]] = None) -> dict:
        """Send ``msg`` and return the first answer of ``answer_type`` (a ``to_client`` struct's
        ``TYPE``); other messages are kept."""
        self.send(msg)
        kind = msg.TYPE if isinstance(msg, Message) else msg.get("type")
        deadline = time.monotonic() + timeout
        kept: list[dict] = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TemporaryError(f"engine at {self.address} did not answer {kind} within {timeout:g}s")
                for item in self.receive(int(remaining * 1000) or 1):
                    if item.get("type") == answer_type and (match is None or match(item)):
                        return item
                    if item.get("type") == to_client.Error.TYPE and item.get("request") == kind:
                        raise ProtocolError(f"engine refused {kind}: {item.get('reason')}")
                    kept.append(item)
        finally:
            self._inbox = kept + self._inbox

    def hello(self, timeout: float = 30.0, **fields) -> dict:
        """Introduce this client (``fields`` add to the hello message, e.g. ``acks_replay``);
        return the engine's welcome (accounts and their states)."""
        return self.request(from_client.Hello(name=self.name, **fields), to_client.Welcome.TYPE, timeout)

    def close(self, linger_ms: int = 1000) -> None:
        """Say goodbye and close the socket (idempotent).

        ``linger_ms`` bounds how long unsent messages may delay closing; use 0 when the
        engine is known to be gone.
        """
        if self.socket.closed:
            return
        if linger_ms:
            # Goodbye is a courtesy: an engine that is gone or busy does not need it.
            with contextlib.suppress(zmq.ZMQError):
                self.socket.send(encode([from_client.Bye()]), zmq.NOBLOCK)
        self.socket.close(linger=linger_ms)
        if self._own_ctx:
            self.ctx.term()
