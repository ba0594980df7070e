"""ZeroMQ sockets wrapped as the message queues an Account Manager and the engine use.

A ``MessageQueue`` owns one socket and is used from one thread only. ``put`` queues a
message locally; ``flush`` sends everything queued as one frame. A send that would
block (peer gone, high-water mark reached) keeps the frame and retries on the next
``flush``: order and fill messages are never dropped here.

A receiving queue decodes with the ``maotrade.protocol`` channel of its direction: what
``drain`` returns has passed every check of the protocol, and what was refused is
counted in ``malformed`` and kept in ``refused`` for the owner to answer.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Optional

import zmq

from maotrade.errors import ProtocolError
from maotrade.protocol import MAX_FRAME_BYTES, Channel, Refusal, as_dicts, encode

Scrub = Callable[[list], list]
Pack = Callable[[object, list], object]

log = logging.getLogger(__name__)

# Frames are batches, so a few hundred frames already hold hundreds of thousands of messages.
DEFAULT_HWM = 200
# Zero-copy sends only pay off for large frames; small ones are cheaper copied.
ZERO_COPY_MIN = 64 * 1024
# Plain ints: pyzmq's enum wrappers cost more than the call itself on the hot path.
ZMQ_EVENTS = int(zmq.EVENTS)
ZMQ_POLLIN = int(zmq.POLLIN)
# Refusals a queue keeps for its owner to answer, at most.
MAX_KEPT_REFUSALS = 1000


class _Run:
    """Consecutive items queued under one key, packed into one message at flush."""

    __slots__ = ("key", "items", "pack")

    def __init__(self, key, item, pack: Pack):
        self.key, self.items, self.pack = key, [item], pack


def limit_frame_size(sock: zmq.Socket) -> zmq.Socket:
    """Make libzmq drop a peer that sends a frame over ``MAX_FRAME_BYTES`` before buffering it."""
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    return sock


class MessageQueue:
    """One end of a one-way message channel (PUSH to send, PULL to receive)."""

    def __init__(self, socket: zmq.Socket, name: str = "", scrub: Optional[Scrub] = None,
                 channel: Optional[Channel] = None, as_maps: bool = False):
        """``scrub``, if given, redacts messages at this boundary: every batch passes
        through it before it is sent, or after it is received. ``channel`` is the
        direction a receiving queue decodes; ``as_maps`` hands its messages on as plain
        maps instead of structs (for code that still handles maps)."""
        self.socket = socket
        self.name = name
        self.scrub = scrub
        self.channel = channel
        self.as_maps = as_maps
        self._outbox: list = []
        self._run: Optional[_Run] = None  # the run ``put_run`` extends, while it is the outbox's last item
        self._unsent: deque[bytes] = deque()
        self.malformed = 0
        #: messages refused at decode time since the owner last looked (bounded).
        self.refused: list[Refusal] = []

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
    def receiver(cls, ctx: zmq.Context, address: str, channel: Channel, bind: bool = True, name: str = "",
                 scrub: Optional[Scrub] = None, as_maps: bool = False) -> "MessageQueue":
        """Open the receiving end (PULL) at ``address``, decoding ``channel``'s messages."""
        sock = ctx.socket(zmq.PULL)
        limit_frame_size(sock)
        sock.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        (sock.bind if bind else sock.connect)(address)
        return cls(sock, name or address, scrub, channel, as_maps)

    # -- sending ----------------------------------------------------------------
    def put(self, msg) -> None:
        """Queue a message (a ``maotrade.protocol`` struct); it leaves with the next ``flush``."""
        self._outbox.append(msg)

    def put_run(self, key, item, pack: Pack, limit: int) -> None:
        """Queue ``item`` as part of a run: consecutive items of one ``key`` leave as one
        message, ``pack(key, items)``, built at ``flush`` (at most ``limit`` items each).

        Anything ``put`` in between ends the run, so the order of messages is kept."""
        run = self._run
        if run is not None and run.key == key and len(run.items) < limit and self._outbox and self._outbox[-1] is run:
            run.items.append(item)
        else:
            self._run = run = _Run(key, item, pack)
            self._outbox.append(run)

    def send(self, msg) -> bool:
        """Queue a message and flush at once; return True if everything went out."""
        self._outbox.append(msg)
        return self.flush()

    def flush(self) -> bool:
        """Send what is queued as one frame; return True when nothing is left pending."""
        if self._outbox:
            batch = self._outbox
            if self._run is not None:
                batch = [item.pack(item.key, item.items) if type(item) is _Run else item for item in batch]
                self._run = None
            self._unsent.append(encode(self.scrub(batch) if self.scrub is not None else batch))
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
    def drain(self, max_frames: int = 1000) -> list:
        """Return every message already received (up to ``max_frames`` frames), never blocking.

        A malformed frame is logged, counted in ``malformed`` and skipped; a malformed
        message in a good frame is refused alone (logged, counted, kept in ``refused``).
        """
        out: list = []
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
                batch, refused = self.channel.decode(frame)
            except ProtocolError as exc:
                self.malformed += 1
                log.warning("event=malformed_frame queue=%s reason=%s", self.name, exc)
                continue
            if refused:
                self._refuse(refused)
            if self.as_maps:
                batch = as_dicts(batch)
            out.extend(self.scrub(batch) if self.scrub is not None else batch)
        return out

    def _refuse(self, refused: list[Refusal]) -> None:
        self.malformed += len(refused)
        for refusal in refused:
            log.warning("event=malformed_message queue=%s reason=%s", self.name, refusal.reason)
        # Kept for the owner to answer; a flood the owner never reads must not grow it forever.
        self.refused = (self.refused + refused)[-MAX_KEPT_REFUSALS:]

    def take_refused(self) -> list[Refusal]:
        """Return the messages refused since the last call, and forget them."""
        refused, self.refused = self.refused, []
        return refused

    def wait(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for something to read; return True if there is."""
        return bool(self.socket.poll(timeout_ms, zmq.POLLIN))

    def close(self, linger_ms: Optional[int] = None) -> None:
        """Close the socket, trying to send what is pending first."""
        self.flush()
        if linger_ms is not None:
            self.socket.setsockopt(zmq.LINGER, linger_ms)
        self.socket.close()
