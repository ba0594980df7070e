"""Pacing of historical data requests (pure: the caller passes the clock).

IB's historical data rules: at most 60 requests in any 10 minutes, no identical
request within 15 seconds, at most 6 requests for one contract in 2 seconds.
Breaking them earns error 162 and, repeated, a disconnect. The per-message limit
(50 messages per second) is enforced by ib_insync's own request throttle, which the
manager configures from ``max_requests_per_second``.
"""
from __future__ import annotations

from collections import deque


class HistoricalPacer:
    """Say how long a historical request must wait to respect IB's pacing rules."""

    IDENTICAL_WINDOW = 15.0
    CONTRACT_WINDOW = 2.0
    GLOBAL_WINDOW = 600.0

    def __init__(self, per_10min: int = 60, same_contract_2s: int = 5):
        self.per_10min = per_10min
        self.same_contract_2s = same_contract_2s
        self._sent: deque[tuple[float, str, tuple]] = deque()  # (time, contract, request)

    def delay(self, now: float, contract: str, request: tuple) -> float:
        """Seconds to wait before sending ``request`` for ``contract`` (0: send now)."""
        self._forget(now)
        wait = 0.0
        if len(self._sent) >= self.per_10min:
            wait = max(wait, self._sent[len(self._sent) - self.per_10min][0] + self.GLOBAL_WINDOW - now)
        same = [t for t, c, _ in self._sent if c == contract and now - t < self.CONTRACT_WINDOW]
        if len(same) >= self.same_contract_2s:
            wait = max(wait, same[len(same) - self.same_contract_2s] + self.CONTRACT_WINDOW - now)
        for t, c, r in self._sent:
            if r == request and now - t < self.IDENTICAL_WINDOW:
                wait = max(wait, t + self.IDENTICAL_WINDOW - now)
        return max(wait, 0.0)

    def record(self, now: float, contract: str, request: tuple) -> None:
        """Remember that ``request`` was sent at ``now``."""
        self._sent.append((now, contract, request))

    def _forget(self, now: float) -> None:
        while self._sent and now - self._sent[0][0] >= self.GLOBAL_WINDOW:
            self._sent.popleft()
