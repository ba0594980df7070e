"""Lock-step replay: a broker replaying history sends its next bar only when every
strategy that received the previous one has handled it.

A replaying Account Manager (capability ``replay``) numbers its bars (``replay_seq``) and
sends one each time it gets ``replay_advance``. Strategy hosts that say ``acks_replay`` in
their hello answer each such bar with ``bar_ack`` after the requests it caused, so those
requests reach the broker before the advance: orders placed on bar N trade on bar N+1,
exactly as in a backtest, however fast or slow each process is.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from maotrade.protocol import to_worker

log = logging.getLogger(__name__)


class ReplayGate:
    """Counts the acknowledgements of each replaying account's last bar."""

    def __init__(self, send: Callable[[str, dict], None]):
        self._send = send  # (account, message) -> queued to that account's worker
        self.ackers: set[bytes] = set()
        self.waiting: dict[str, tuple[int, set[bytes]]] = {}  # account -> (seq, identities)

    def hello(self, identity: bytes, msg: dict) -> None:
        """Note a client that acknowledges replayed bars."""
        if msg.get("acks_replay"):
            self.ackers.add(identity)

    def start(self, account: str) -> None:
        """The account is ready (first time or after a restart): let it send a bar."""
        self.waiting.pop(account, None)
        self._advance(account)

    def on_bar(self, account: str, seq: int, receivers: Iterable[bytes]) -> None:
        """A replayed bar went to ``receivers``; wait for those that acknowledge."""
        pending = {r for r in receivers if r in self.ackers}
        if pending:
            self.waiting[account] = (int(seq), pending)
        else:
            self.waiting.pop(account, None)
            self._advance(account)

    def on_ack(self, identity: bytes, account: str, seq) -> None:
        """A client handled bar ``seq`` of ``account``."""
        entry = self.waiting.get(account)
        if entry is None or entry[0] != seq:
            return  # late or repeated: that bar was already released
        entry[1].discard(identity)
        if not entry[1]:
            del self.waiting[account]
            self._advance(account)

    def forget(self, identity: bytes) -> None:
        """A client left: stop waiting for it."""
        self.ackers.discard(identity)
        for account, (seq, pending) in list(self.waiting.items()):
            pending.discard(identity)
            if not pending:
                del self.waiting[account]
                self._advance(account)

    def _advance(self, account: str) -> None:
        self._send(account, to_worker.ReplayAdvance())
