"""Run notifications on a thread of their own, fed by the engine's published events.

``Notifier.offer`` is what the event feed calls: it puts the event in a bounded queue and
returns at once (when the queue is full the event is counted as dropped, never waited
for). The notifier's thread classifies, routes, rate limits and delivers. A channel over
its rate keeps a count of what it suppressed and says so in its next message.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import requests

from engine.notify.channels import DeliveryFailed, RetryLater, make_channel
from engine.notify.config import NotifySettings, RateLimit
from engine.notify.events import Classifier, Notification

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
MAX_RETRY_WAIT_S = 60.0  # a longer retry_after than this and the notification is dropped


@dataclass
class TokenBucket:
    """``burst`` messages at once, then ``per_minute`` (a clock is passed in for the tests)."""

    limit: RateLimit
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self):
        self.tokens = float(self.limit.burst)
        self.stamp = self.clock()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = self.clock()
        self.tokens = min(float(self.limit.burst), self.tokens + (now - self.stamp) * self.limit.per_minute / 60)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Notifier:
    """Deliver the notifications ``settings`` asks for, off the engine's thread."""

    def __init__(self, settings: NotifySettings, session: Optional[requests.Session] = None):
        self.settings = settings
        self.session = session or requests.Session()
        self.channels = {name: make_channel(name, cfg, self.session) for name, cfg in settings.channels.items()}
        self.buckets = {name: TokenBucket(settings.rate_limit) for name in self.channels}
        self.suppressed = {name: 0 for name in self.channels}
        self.classifier = Classifier()
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self.delivered = {name: 0 for name in self.channels}
        self.failed = {name: 0 for name in self.channels}
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self.abandoned = 0
        self._thread: Optional[threading.Thread] = None

    # -- the engine's side --------------------------------------------------------------------
    def offer(self, event: dict) -> None:
        """Take one engine event; never blocks."""
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    # -- the notifier's thread ------------------------------------------------------------------
    def start(self) -> "Notifier":
        """Start delivering."""
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop."""
        self._stop.set()
        while True:
            try:
                self.queue.put_nowait(None)
                break
            except queue.Full:  # stopping: the oldest waiting event gives way to the end marker
                self.queue.get_nowait()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._abandon.set()  # whatever still waits is not worth holding the stop up
        self.session.close()

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                if self.abandoned:
                    log.warning("event=notify_abandoned count=%d", self.abandoned)
                return
            if self._abandon.is_set():
                self.abandoned += 1
                continue
            try:
                note = self.classifier.classify(event)
                if note is not None:
                    self.route(note)
            except Exception:  # a malformed event must not end notifications
                log.exception("event=notify_failed type=%s", event.get("type"))

    def route(self, note: Notification) -> None:
        """Send ``note`` to every channel whose route takes it, within the channel's rate."""
        names = {r.channel for r in self.settings.routes if r.matches(note.account, note.kind)}
        for name in sorted(names):
            if not self.buckets[name].take():
                self.suppressed[name] += 1
                continue
            held, self.suppressed[name] = self.suppressed[name], 0
            if held:
                note = Notification(note.kind, note.account,
                                    f"{note.text}\n({held} earlier notification(s) suppressed by the rate limit)",
                                    {**note.data, "suppressed": held})
            self._deliver(name, note)

    def _deliver(self, name: str, note: Notification) -> None:
        channel = self.channels[name]
        for attempt in (1, 2):
            try:
                channel.send(note)
                self.delivered[name] += 1
                return
            except RetryLater as exc:
                if attempt == 2 or exc.retry_after > MAX_RETRY_WAIT_S or self._stop.is_set():
                    self._failed(name, note, str(exc))
                    return
                log.warning("event=notify_retry channel=%s kind=%s wait_s=%s reason=%s", name, note.kind,
                            exc.retry_after, exc)
                self._stop.wait(exc.retry_after)
            except DeliveryFailed as exc:
                self._failed(name, note, str(exc))
                return

    def _failed(self, name: str, note: Notification, reason: str) -> None:
        self.failed[name] += 1
        log.warning("event=notify_failed channel=%s kind=%s account=%s reason=%s", name, note.kind, note.account,
                    reason)
