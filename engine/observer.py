"""Follow the engine's published events from a thread of its own.

The engine publishes every event (orders, fills, account states, kill switch, stale
data...) on its PUB socket with a sequence number. ``EventFeed`` subscribes to it on a
thread, so whoever reads the events (the dashboard's live stream, the notifier) can be
as slow as it likes without ever holding the engine loop up. PUB may drop at its
high-water mark; a gap in ``seq`` is reported to the listeners as a ``feed_gap`` event
so they can fetch a fresh snapshot.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Iterable, Optional

import zmq

from maotrade.errors import ProtocolError
from maotrade.messages import unpack_batch

log = logging.getLogger(__name__)

FEED_GAP = "feed_gap"
POLL_MS = 200  # how often the thread looks at its stop flag
DEFAULT_SKIPPED = frozenset({"market_data"})  # bars are for strategies, not for people

Listener = Callable[[dict], None]


class EventFeed:
    """Events of the engine at ``pub_address`` handed to listeners, and the latest ``keep`` of them."""

    def __init__(self, pub_address: str, skip: Iterable[str] = DEFAULT_SKIPPED, keep: int = 300,
                 name: str = "event-feed"):
        self.pub_address = pub_address
        self.skip = frozenset(skip)
        self.name = name
        self._recent: deque = deque(maxlen=keep)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.last_seq: Optional[int] = None
        self.missed = 0

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on the feed thread for every event; it must not block."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def recent(self) -> list[dict]:
        """The latest events, oldest first."""
        with self._lock:
            return list(self._recent)

    def start(self, timeout: float = 5.0) -> "EventFeed":
        """Subscribe on a thread; return once the socket is connected."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._subscribed.wait(timeout)
        return self

    def stop(self) -> None:
        """End the thread and close its socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        ctx = zmq.Context()
        socket = ctx.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, 100_000)
        socket.connect(self.pub_address)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._subscribed.set()
        try:
            while not self._stop.is_set():
                if not socket.poll(POLL_MS, zmq.POLLIN):
                    continue
                frame = socket.recv()
                try:
                    batch = unpack_batch(frame)
                except ProtocolError as exc:
                    log.warning("event=feed_frame_refused reason=%s", exc)
                    continue
                for event in batch:
                    self._deliver(event)
        finally:
            socket.close(0)
            ctx.term()

    def _deliver(self, event: dict) -> None:
        seq = event.get("seq")
        if isinstance(seq, int):
            if self.last_seq is not None and seq > self.last_seq + 1:
                missed = seq - self.last_seq - 1
                self.missed += missed
                self._hand_out({"type": FEED_GAP, "missed": missed}, keep=False)
            self.last_seq = seq
        if event.get("type") in self.skip:
            return
        self._hand_out(event, keep=True)

    def _hand_out(self, event: dict, keep: bool) -> None:
        with self._lock:
            if keep:
                self._recent.append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # one broken listener must not silence the others
                log.exception("event=feed_listener_failed feed=%s", self.name)
