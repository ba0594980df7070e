"""KiteTicker, the real library, on Twisted's reactor in a background thread.

Twisted has one reactor per process and it cannot be restarted, so it is started once and
kept: a new session makes a new ``KiteTicker`` on the same reactor. Every call into the
ticker goes through ``reactor.callFromThread`` (autobahn is not thread-safe); every
callback is handed on as it is and must be moved to the worker's loop by the receiver.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from kiteconnect import KiteTicker
from twisted.internet import reactor

log = logging.getLogger(__name__)
# The library logs every close as an ERROR, our own deliberate ones included; the manager
# logs each state change of the ticker itself, at the level it deserves.
logging.getLogger("kiteconnect.ticker").setLevel(logging.CRITICAL)

OPEN = "open"
CLOSED = "closed"
GAVE_UP = "gave_up"


class KiteStream:
    """One ticker session: subscriptions by instrument token, ticks and order updates out."""

    def __init__(self, api_key: str, access_token: str, root: str, mode: str,
                 on_ticks: Callable[[list], None], on_order_update: Callable[[dict], None],
                 on_state: Callable[[str, str], None], max_delay: float = 5.0, max_tries: int = 50,
                 connect_timeout: float = 10.0):
        self.mode = mode
        self.wanted: set[int] = set()
        self.opened = threading.Event()
        self._on_state = on_state
        self.ticker = KiteTicker(api_key, access_token, root=root, reconnect=True,
                                 reconnect_max_tries=max_tries, reconnect_max_delay=max_delay,
                                 connect_timeout=int(connect_timeout))
        self.ticker.on_ticks = lambda ws, ticks: on_ticks(ticks)
        self.ticker.on_order_update = lambda ws, data: on_order_update(data)
        self.ticker.on_open = self._opened
        self.ticker.on_close = lambda ws, code, reason: self._closed(f"closed {code} {reason or ''}".strip())
        self.ticker.on_error = lambda ws, code, reason: log.info("event=kite_ticker_error code=%s reason=%s",
                                                                 code, reason)
        self.ticker.on_noreconnect = lambda ws: self._on_state(GAVE_UP, "ticker gave up reconnecting")

    def start(self, timeout: float) -> bool:
        """Connect; return True once the socket is open within ``timeout`` seconds."""
        if reactor.running:
            reactor.callFromThread(self.ticker.connect, threaded=True)
        else:
            self.ticker.connect(threaded=True)
        return self.opened.wait(timeout)

    def subscribe(self, tokens: set[int]) -> None:
        """Stream ``tokens`` in this stream's mode (now if open, else once it opens)."""
        self.wanted |= set(tokens)
        reactor.callFromThread(self._send_subscriptions, sorted(tokens))

    def unsubscribe(self, tokens: set[int]) -> None:
        """Stop streaming ``tokens``."""
        self.wanted -= set(tokens)
        if tokens:
            reactor.callFromThread(self._send_unsubscribe, sorted(tokens))

    def close(self) -> None:
        """Close for good (no reconnect)."""
        self.ticker.on_close = None
        self.ticker.on_noreconnect = None
        reactor.callFromThread(self.ticker.close)

    # -- reactor thread ---------------------------------------------------------------
    def _opened(self, ws) -> None:
        self.opened.set()
        self._send_subscriptions(sorted(self.wanted))
        self._on_state(OPEN, "ticker open")

    def _closed(self, reason: str) -> None:
        self.opened.clear()
        self._on_state(CLOSED, reason)

    def _send_subscriptions(self, tokens: list[int]) -> None:
        if tokens and self.ticker.is_connected():
            self.ticker.subscribe(tokens)
            self.ticker.set_mode(self.mode, tokens)

    def _send_unsubscribe(self, tokens: list[int]) -> None:
        if self.ticker.is_connected():
            self.ticker.unsubscribe(tokens)
