"""Historical data requests: from a client, through the engine, to an account's worker and back.

A client sends ``history_request`` naming an account, an instrument (MAOTrade epic), a
time frame and a range. The engine resolves the broker's code from the account's epic
mapping, gives the request an id of its own (two clients may pick the same one) and
passes it to the worker. Each ``history_data`` part the worker sends goes back to the
client that asked, with the client's request id; the last part has ``done`` set. The
engine keeps no bars: it only routes. A client that leaves has its requests forgotten;
a worker that restarts ends its requests with an error.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.accounts import AccountBook, AccountRuntime, AccountState
from maotrade.errors import InvalidOrder, ProtocolError
from maotrade.messages import (ClientToEngine as FromClient, EngineToClient as ToClient, WorkerToEngine as FromWorker,
                               message)
from maotrade.protocol import to_worker

if TYPE_CHECKING:  # the bus is only read and written through
    from engine.bus import ClientSession, EngineBus

log = logging.getLogger(__name__)

# Requests in flight per client: a download asks for one range at a time, so a few is plenty.
MAX_PENDING_PER_CLIENT = 8


@dataclass
class _Pending:
    session: "ClientSession"
    client_request_id: str
    account: str


class HistoryRouter:
    """Routes history requests to workers and their parts back to the asking client."""

    WORKER_TYPES = frozenset({FromWorker.HISTORY_DATA})

    def __init__(self, accounts: AccountBook, bus: "EngineBus"):
        self.accounts = accounts
        self.bus = bus
        self.pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)

    def client_handlers(self) -> dict:
        """Entries for the engine's client message table."""
        return {FromClient.HISTORY_REQUEST: self._on_request}

    def _on_request(self, session: "ClientSession", msg: dict) -> None:
        runtime = self.accounts.lookup(msg)
        client_request_id = msg.get("request_id")
        if not isinstance(client_request_id, str) or not client_request_id:
            raise ProtocolError("history_request needs a string 'request_id'")
        epic = msg.get("epic")
        if not isinstance(epic, str) or not epic:
            raise ProtocolError("history_request needs 'epic' (string)")
        epic_broker = runtime.broker_epic(epic)  # refuses an instrument the account does not trade
        if sum(1 for p in self.pending.values() if p.session is session) >= MAX_PENDING_PER_CLIENT:
            raise InvalidOrder(f"{MAX_PENDING_PER_CLIENT} history requests already in flight")
        if runtime.state != AccountState.READY:
            detail = f" ({runtime.reason})" if runtime.reason else ""
            raise InvalidOrder(f"account {runtime.account} is {runtime.state}{detail}")
        request_id = f"h{next(self._ids)}"
        self.pending[request_id] = _Pending(session, client_request_id, runtime.account)
        request = {"request_id": request_id, "epic": epic, "epicBroker": epic_broker,
                   "time_frame": msg.get("time_frame"), "start": msg.get("start"), "end": msg.get("end")}
        self.bus.open_worker_queue(runtime.account).put(to_worker.HistoryRequest(request=to_worker.HistoryQuery(**request)))
        log.info("event=history_request account=%s epic=%s time_frame=%s start=%s end=%s client=%s",
                 runtime.account, epic, request["time_frame"], request["start"], request["end"], session.name)

    def on_worker_message(self, runtime: AccountRuntime, msg: dict) -> None:
        """Pass one ``history_data`` part to the client that asked for it."""
        pending = self.pending.get(str(msg.get("request_id")))
        if pending is None or pending.account != runtime.account:
            log.info("event=history_part_dropped account=%s request=%s (no client waits for it)",
                     runtime.account, msg.get("request_id"))
            return
        if msg.get("done"):
            del self.pending[str(msg["request_id"])]
        if pending.session.identity not in self.bus.clients:
            return
        pending.session.put(message(ToClient.HISTORY_DATA, account=runtime.account,
                                    request_id=pending.client_request_id, bars=msg.get("bars") or [],
                                    start=msg.get("start"), end=msg.get("end"), done=bool(msg.get("done")),
                                    error=msg.get("error"), allowance=msg.get("allowance")))

    def forget_session(self, session: "ClientSession") -> None:
        """Drop the requests of a client that left (their parts are then discarded)."""
        for request_id in [r for r, p in self.pending.items() if p.session is session]:
            del self.pending[request_id]

    def worker_gone(self, account: str, reason: str) -> None:
        """End every request of an account whose worker stopped: it will not answer them."""
        for request_id, pending in list(self.pending.items()):
            if pending.account == account:
                del self.pending[request_id]
                pending.session.put(message(ToClient.HISTORY_DATA, account=account,
                                            request_id=pending.client_request_id, bars=[], start=None,
                                            end=None, done=True, error=f"account {account}: {reason}"))
