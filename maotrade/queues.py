"""ZeroMQ sockets wrapped as the message queues an Account Manager and the engine use.

A ``MessageQueue`` owns one socket and is used from one thread only. ``put`` queues a
message locally; ``flush`` sends everything queued as one frame. A send that would
block (peer gone, high-water mark reached) keeps the frame and retries on the next
``flush``: order and fill messages are never dropped here.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Optional

import zmq

from maotrade.errors import ProtocolError
from maotrade.messages import MAX_FRAME_BYTES, pack_batch, unpack_batch

Scrub = Callable[[list], list]

log = logging.getLogger(__name__)

# Frames are batches, so a few hundred frames already hold hundreds of thousands of messages.
DEFAULT_HWM = 200
# Zero-copy sends only pay off for large frames; small ones are cheaper copied.
ZERO_COPY_MIN = 64 * 1024
# Plain ints: pyzmq's enum wrappers cost more than the call itself on the hot path.
ZMQ_EVENTS = int(zmq.EVENTS)
ZMQ_POLLIN = int(zmq.POLLIN)


def limit_frame_size(sock: zmq.Socket) -> zmq.Socket:
    """Make libzmq drop a peer that sends a frame over ``MAX_FRAME_BYTES`` before buffering it."""
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    return sock


class MessageQueue:
    """One end of a one-way message channel (PUSH to send, PULL to receive)."""

    def __init__(self, socket: zmq.Socket, name: str = "", scrub: Optional[Scrub] = None):
        """``scrub``, if given, redacts messages at this boundary: every batch passes
        through it before it is sent, or after it is received."""
        self.socket = socket
        self.name = name
        self.scrub = scrub
        self._outbox: list[dict] = []
        self._unsent: deque[bytes] = deque()
        self.malformed = 0

    # -- construction ----------------------------------------------------------
    @classmethod
    def sender(cls, ctx: zmq.Context, address: str, bind: bool = False, name: str = "",
               scrub: Optional[Scrub] = None) -> "MessageQueue":
        """Open the sending end (PUSH) at ``address``."""
        sock = ctx.socket(zmq.PUSH)
        limit_frame_size(sock)
        sock.setsockopt(zmq.SNDHWM, DEFAULT_HWM)
        sock.setsockopt(zmq.LINGER, 2000)
        (sock.bind if bind else sock.connect)(address)
        return cls(sock, name or address, scrub)

    @classmethod
    def receiver(cls, ctx: zmq.Context, address: str, bind: bool = True, name: str = "",
                 scrub: Optional[Scrub] = None) -> "MessageQueue":
        """Open the receiving end (PULL) at ``address``."""
        sock = ctx.socket(zmq.PULL)
        limit_frame_size(sock)
        sock.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        (sock.bind if bind else sock.connect)(address)
        return cls(sock, name or address, scrub)

    # -- sending ----------------------------------------------------------------
    def put(self, msg: dict) -> None:
        """Queue a message; it leaves with the next ``flush``."""
        self._outbox.append(msg)

    def send(self, msg: dict) -> bool:
        """Queue a message and flush at once; return True if everything went out."""
        self._outbox.append(msg)
        return self.flush()

    def flush(self) -> bool:
        """Send what is queued as one frame; return True when nothing is left pending."""
        if self._outbox:
            self._unsent.append(pack_batch(self.scrub(self._outbox) if self.scrub is not None else self._outbox))
            self._outbox = []
        while self._unsent:
            try:
                self.socket.send(self._unsent[0], zmq.NOBLOCK, copy=len(self._unsent[0]) < ZERO_COPY_MIN)
            except zmq.Again:
                return False
            self._unsent.popleft()
        return True

    @property
    def pending(self) -> int:
        """Number of frames waiting for the peer."""
        return len(self._unsent) + (1 if self._outbox else 0)

    # -- receiving --------------------------------------------------------------
    def drain(self, max_frames: int = 1000) -> list[dict]:
        """Return every message already received (up to ``max_frames`` frames), never blocking.

        A malformed frame is logged, counted in ``malformed`` and skipped.
        """
        out: list[dict] = []
        sock = self.socket
        for _ in range(max_frames):
            # Asking first is far cheaper than the zmq.Again exception that ends a NOBLOCK loop.
            if not sock.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN:
                break
            try:
                frame = sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            try:
                batch = unpack_batch(frame)
            except ProtocolError as exc:
                self.malformed += 1
                log.warning("event=malformed_frame queue=%s reason=%s", self.name, exc)
                continue
            out.extend(self.scrub(batch) if self.scrub is not None else batch)
        return out

    def wait(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for something to read; return True if there is."""
        return bool(self.socket.poll(timeout_ms, zmq.POLLIN))

    def close(self, linger_ms: Optional[int] = None) -> None:
        """Close the socket, trying to send what is pending first."""
        self.flush()
        if linger_ms is not None:
            self.socket.setsockopt(zmq.LINGER, linger_ms)
        self.socket.close()
