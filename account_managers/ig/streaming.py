"""IG's Lightstreamer streams through lightstreamer-client-lib.

``IGStream`` owns one ``LightstreamerClient`` logged in as IG expects (user = account
id, password = ``CST-...|XST-...``) and a set of named subscriptions. Library callbacks
arrive on the library's threads; every callback here only hands a plain dict to
``deliver`` / ``on_status``, which the manager routes to its loop.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from lightstreamer.client import (ClientListener, LightstreamerClient, Subscription,
                                  SubscriptionListener)

log = logging.getLogger(__name__)

CONNECTED_PREFIX = "CONNECTED:"
DISCONNECTED_PREFIX = "DISCONNECTED"


class _Status(ClientListener):
    def __init__(self, stream: "IGStream"):
        self.stream = stream

    def onStatusChange(self, status):
        self.stream._status(status)

    def onServerError(self, code, message):
        self.stream._server_error(code, message)


class _Items(SubscriptionListener):
    def __init__(self, stream: "IGStream", key: str, fields: list[str]):
        self.stream, self.key, self.fields = stream, key, fields

    def onItemUpdate(self, update):
        if self.stream.closed:
            return
        values = {f: update.getValue(f) for f in self.fields}
        changed = set(update.getChangedFields())
        self.stream.deliver(self.key, update.getItemName(), values, changed)

    def onSubscription(self):
        self.stream._subscribed(self.key)

    def onSubscriptionError(self, code, message):
        self.stream.on_error(self.key, f"Lightstreamer refused {self.key}: {code} {message}")


class IGStream:
    """One Lightstreamer connection and its subscriptions, keyed by our own names."""

    def __init__(self, endpoint: str, account_id: str, password: str, adapter_set: str,
                 deliver: Callable[[str, str, dict, set], None], on_status: Callable[[str], None],
                 on_error: Callable[[str, str], None], keepalive_ms: int = 0, stalled_ms: int = 2000,
                 reconnect_ms: int = 3000):
        self.deliver = deliver
        self.on_status = on_status
        self.on_error = on_error
        self.connected = threading.Event()
        self._settled = threading.Event()  # connected, or refused for good
        self.failure: Optional[str] = None
        self.client = LightstreamerClient(endpoint, adapter_set or None)
        self.client.connectionDetails.setUser(account_id)
        self.client.connectionDetails.setPassword(password)
        if keepalive_ms:
            self.client.connectionOptions.setKeepaliveInterval(keepalive_ms)
        self.client.connectionOptions.setStalledTimeout(stalled_ms)
        self.client.connectionOptions.setReconnectTimeout(reconnect_ms)
        self.client.addListener(_Status(self))
        self.subscriptions: dict[str, Subscription] = {}
        self._live: dict[str, threading.Event] = {}  # key -> set once the server confirmed it
        self.closed = False

    def connect(self, timeout: float, confirmed: tuple[str, ...] = ()) -> bool:
        """Open the stream; wait up to ``timeout`` seconds for it and for the server to
        confirm the subscriptions named in ``confirmed`` (called off-loop).

        An update published before the server confirmed a subscription is not delivered:
        the caller must not count on a subscription it has not seen confirmed."""
        deadline = time.monotonic() + timeout
        self.client.connect()
        self._settled.wait(timeout)
        for key in confirmed:
            live = self._live.get(key)
            if live is None or not live.wait(max(0.0, deadline - time.monotonic())):
                self.failure = self.failure or f"subscription {key} not confirmed within {timeout:g}s"
                return False
        return self.connected.is_set() and not self.closed

    def set_password(self, password: str) -> None:
        """Use new IG tokens for the next Lightstreamer session."""
        self.client.connectionDetails.setPassword(password)

    def subscribe(self, key: str, mode: str, items: list[str], fields: list[str], snapshot: bool) -> None:
        """Subscribe ``items`` under ``key`` (replacing what ``key`` had)."""
        self.unsubscribe(key)
        sub = Subscription(mode, items, fields)
        if snapshot:
            sub.setRequestedSnapshot("yes")
        sub.addListener(_Items(self, key, fields))
        self.subscriptions[key] = sub
        self._live[key] = threading.Event()
        self.client.subscribe(sub)

    def unsubscribe(self, key: str) -> bool:
        """Drop subscription ``key``; return False if there was none."""
        sub = self.subscriptions.pop(key, None)
        self._live.pop(key, None)
        if sub is None:
            return False
        self.client.unsubscribe(sub)
        return True

    def close(self) -> None:
        """Disconnect; no more callbacks are delivered."""
        self.closed = True
        self.client.disconnect()

    def _subscribed(self, key: str) -> None:
        live = self._live.get(key)
        if live is not None:
            live.set()

    def _status(self, status: str) -> None:
        if self.closed:
            return
        if status.startswith(CONNECTED_PREFIX) and status != "CONNECTED:STREAM-SENSING":
            self.connected.set()
            self._settled.set()
        elif status.startswith(DISCONNECTED_PREFIX):
            self.connected.clear()
        self.on_status(status)

    def _server_error(self, code, message) -> None:
        self.failure = f"Lightstreamer refused the session: {code} {message}"
        self._settled.set()
        if not self.closed:
            self.on_status(f"{DISCONNECTED_PREFIX}:ERROR {code} {message}")
