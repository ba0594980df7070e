"""Thread-safe requests from the API's threads to the engine over its bus.

The API is an ordinary bus client: one DEALER socket (``EngineClient``) used by one
thread at a time under a lock. Nothing here runs inside the engine loop, so a slow HTTP
client can never hold the engine up.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

from maotrade.client import EngineClient
from maotrade.errors import MAOTradeError, ProtocolError
from maotrade.messages import message


class EngineRequestError(MAOTradeError):
    """The engine refused a request; ``not_found`` when it named an unknown account or order."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.not_found = "unknown account" in reason or "unknown order" in reason


class EngineBridge:
    """Serialises bus requests from many threads onto one engine client."""

    def __init__(self, address: str, name: str = "api", timeout: float = 5.0):
        self.address = address
        self.name = name
        self.timeout = timeout
        self._lock = threading.Lock()
        self._client: Optional[EngineClient] = None

    def _connected(self) -> EngineClient:
        if self._client is None:
            self._client = EngineClient(self.address, name=self.name)
            self._client.hello(timeout=self.timeout)
        return self._client

    def call(self, msg_type: str, answer_type: str, match: Optional[Callable[[dict], bool]] = None,
             before: tuple = (), **fields) -> dict:
        """Send ``before`` messages then ``msg_type``; return its answer of ``answer_type``.

        A refusal of any of these messages (an ``error``, or a refused cancel or amend of a
        known order, which comes back as that order with its error) raises
        ``EngineRequestError`` with the engine's reason.
        """
        with self._lock:
            client = self._connected()
            client.receive(0)  # drop broadcasts and late answers nobody waits for
            try:
                return client.request(message(msg_type, **fields), answer_type, timeout=self.timeout,
                                      match=match, before=before)
            except ProtocolError as exc:
                raise EngineRequestError(str(exc).split(": ", 1)[-1]) from None

    def close(self) -> None:
        """Close the bus connection."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
