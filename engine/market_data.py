"""Market data in the engine: who listens to which stream, how fresh it is, lock-step replay.

A stream is ``(account, epic, time_frame)``. ``MarketData.listeners`` is the one record
of subscriptions: the fan-out index of the bar hot path, the count that decides when a
worker is asked to start or stop a stream (first listener in, last listener out), the
keys the stale-data monitor watches, and what a session is subscribed to. Bars go
straight into each listener's data backlog; everything else is returned to the loop.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from engine.accounts import AccountBook, AccountRuntime
from engine.bus import MAX_QUEUED_BARS, MAX_QUEUED_PAUSED_BARS, ClientSession
from engine.replay import ReplayGate
from engine.staleness import StaleDataMonitor
from maotrade.errors import ProtocolError
from maotrade.messages import EngineToClient as ToClient, message
from maotrade.protocol import to_worker

log = logging.getLogger(__name__)

STALE_CHECK_INTERVAL_S = 0.5
# Flow control: a client with more bars than HOLD_BARS waiting pauses the streams it
# listens to at their workers; they resume once it is under RESUME_BARS. Both are well
# under bus.MAX_QUEUED_BARS, so what is in flight when a hold is sent still fits.
HOLD_BARS = 50_000
RESUME_BARS = 10_000


class MarketData:
    """Subscriptions, fan-out, staleness and the replay gate of every account."""

    def __init__(self, accounts: AccountBook, send_to_worker: Callable[[str, dict], None]):
        self.accounts = accounts
        self._send = send_to_worker  # (account, message) -> queued to that account's worker
        self.listeners: dict[tuple, list[ClientSession]] = {}
        self.stale = StaleDataMonitor()
        self.replay = ReplayGate(send_to_worker)
        self._next_stale_check = 0.0
        self.held: set[str] = set()  # accounts whose worker was asked to hold its bars

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, session: ClientSession, msg: dict, now: float) -> Optional[dict]:
        """Add ``session`` to the stream ``msg`` names; return the ``subscribed`` answer
        (None when it was already subscribed)."""
        runtime = self.accounts.lookup(msg)
        epic, time_frame = msg.get("epic"), msg.get("time_frame")
        if not isinstance(epic, str) or not isinstance(time_frame, int):
            raise ProtocolError("subscribe needs 'epic' (string) and 'time_frame' (integer seconds)")
        runtime.broker_epic(epic)  # refuses an instrument the account does not trade
        key = (runtime.account, epic, time_frame)
        listeners = self.listeners.setdefault(key, [])
        if session in listeners:
            return None
        listeners.append(session)
        if len(listeners) == 1:
            self.stale.watch(key, now)
            self._send(runtime.account, self.request(runtime, "subscribe", epic, time_frame))
        return message(ToClient.SUBSCRIBED, account=runtime.account, epic=epic, time_frame=time_frame)

    def unsubscribe(self, session: ClientSession, account: str, epic, time_frame) -> None:
        """Take ``session`` off a stream; the last listener out stops it at the worker."""
        key = (account, epic, time_frame)
        listeners = self.listeners.get(key)
        if not listeners or session not in listeners:
            return
        listeners.remove(session)
        if not listeners:
            del self.listeners[key]
            self.stale.unwatch(key)
            self._send(account, self.request(self.accounts[account], "unsubscribe", epic, time_frame))

    def drop(self, session: ClientSession) -> None:
        """Forget a client that left: its subscriptions end, replay stops waiting for it."""
        for account, epic, time_frame in self.streams_of(session):
            self.unsubscribe(session, account, epic, time_frame)
        self.replay.forget(session.identity)

    def streams(self, account: str) -> list[tuple[str, int]]:
        """(epic, time_frame) of every stream of ``account`` someone listens to."""
        return [(epic, time_frame) for a, epic, time_frame in self.listeners if a == account]

    def streams_of(self, session: ClientSession) -> list[tuple]:
        """Every stream ``session`` listens to."""
        return [key for key, listeners in self.listeners.items() if session in listeners]

    @staticmethod
    def request(runtime: AccountRuntime, action: str, epic: str, time_frame: int) -> to_worker.MarketDataRequest:
        """The worker's ``market_data_request`` to start or stop one stream."""
        return to_worker.MarketDataRequest(request=to_worker.MarketDataQuery(
            action=action, epic=epic, epicBroker=runtime.broker_epic(epic), time_frame=time_frame))

    # -- the hot path ----------------------------------------------------------------------
    def on_bar(self, runtime: AccountRuntime, msg: dict, now: float) -> Optional[dict]:
        """Fan one bar out to its listeners; return a ``stale_data`` all-clear if it ends a silence."""
        key = (runtime.account, msg["epic"], msg["time_frame"])
        cleared = self._arrived(runtime, key, msg.get("close"), now)
        sessions = self.listeners.get(key)
        if sessions:
            for session in sessions:
                session.put_data(msg)
        if msg.get("replay_seq") is not None:
            self.replay.on_bar(runtime.account, msg["replay_seq"], [s.identity for s in sessions or ()])
        return cleared

    def on_block(self, runtime: AccountRuntime, msg: dict, rows: list, now: float) -> Optional[dict]:
        """Fan one block of bars out to its listeners as it is; return a ``stale_data``
        all-clear if it ends a silence. ``rows`` are its decoded bars (``rows[-1]`` is the latest)."""
        key = (runtime.account, msg["epic"], msg["time_frame"])
        cleared = self._arrived(runtime, key, rows[-1].close, now)
        limit = MAX_QUEUED_PAUSED_BARS if runtime.capabilities.get("pause") else MAX_QUEUED_BARS
        for session in self.listeners.get(key, ()):
            session.put_data(msg, limit)
        return cleared

    def _arrived(self, runtime: AccountRuntime, key: tuple, close: Optional[float], now: float) -> Optional[dict]:
        """Note a stream's latest close and that it is alive; the all-clear if it was silent."""
        if close is not None:
            runtime.last_price[key[1]] = close
        if not self.stale.seen(key, now):
            return None
        log.info("event=stale_data_cleared account=%s epic=%s time_frame=%s", *key)
        return self.stale_event(key, False)

    # -- flow control ------------------------------------------------------------------------
    def pace(self, sessions) -> None:
        """Hold the workers feeding a client that has too many bars waiting; resume them
        once it has caught up (or left). Cheap when no client is behind."""
        behind = False
        for session in sessions:
            if session.queued_bars > HOLD_BARS:
                session.holding = True
            elif session.queued_bars < RESUME_BARS:
                session.holding = False
            behind = behind or session.holding
        if not behind and not self.held:
            return
        # Only a source that can pause is asked to (a live market does not wait).
        wanted = {key[0] for key, listeners in self.listeners.items()
                  if any(s.holding for s in listeners) and self.accounts[key[0]].capabilities.get("pause")}
        for account in wanted - self.held:
            log.info("event=market_data_hold account=%s", account)
            self._send(account, to_worker.MarketDataHold(hold=True))
        for account in self.held - wanted:
            log.info("event=market_data_resume account=%s", account)
            self._send(account, to_worker.MarketDataHold(hold=False))
        self.held = wanted

    # -- staleness ---------------------------------------------------------------------------
    def check_stale(self, now: float) -> list[dict]:
        """``stale_data`` events for streams that went silent (checked at most every 0.5 s)."""
        if now < self._next_stale_check:
            return []
        self._next_stale_check = now + STALE_CHECK_INTERVAL_S
        events = []
        for key, silent in self.stale.check(now):
            log.warning("event=stale_data account=%s epic=%s time_frame=%s silent_s=%.1f", *key, silent)
            events.append(self.stale_event(key, True, silent))
        return events

    def stale_event(self, key: tuple, stale: bool, silent: float = 0.0) -> dict:
        """A ``stale_data`` message for one stream, put to its listeners; returned for publishing."""
        account, epic, time_frame = key
        event = message(ToClient.STALE_DATA, account=account, epic=epic, time_frame=time_frame, stale=stale,
                        silent_s=round(silent, 1))
        for session in self.listeners.get(key, ()):
            session.put(event)
        return event

    def worker_restarted(self, account: str, now: float) -> None:
        """Count silence afresh for the account's streams; a new worker starts unheld."""
        self.stale.restart(account, now)
        self.held.discard(account)
