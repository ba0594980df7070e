"""The engine's clients: who is connected under which name, and who hears of what.

A client names itself in ``hello``; an order placed by it is its own, and its updates go
to it by that name even after it reconnects on a new socket. Sockets themselves are the
bus's (``engine.bus``); this module only decides targets and builds the welcome.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from engine.accounts import AccountBook
from engine.bus import ClientSession, EngineBus
from engine.market_data import MarketData
from maotrade.messages import EngineToClient as ToClient, message

log = logging.getLogger(__name__)


class Clients:
    """Named client sessions: hello, goodbye and notification targets."""

    def __init__(self, bus: EngineBus, accounts: AccountBook, market_data: MarketData):
        self.bus = bus
        self.accounts = accounts
        self.market_data = market_data
        self._identities: dict[str, bytes] = {}  # client name -> its latest socket identity

    def hello(self, session: ClientSession, msg: dict) -> dict:
        """Name ``session``; return the ``welcome`` answer (accounts and their states)."""
        session.name = str(msg.get("name") or session.identity.hex())
        self._identities[session.name] = session.identity
        self.market_data.replay.hello(session.identity, msg)
        accounts = [{"account": a, "state": r.state, "broker": r.broker_name, "data_frames": r.data_frames,
                     "epics": sorted(r.epic_mapping)}
                    for a, r in self.accounts.items()]
        log.info("event=client_hello name=%s", session.name)
        return message(ToClient.WELCOME, accounts=accounts, engine_pid=os.getpid())

    def drop(self, session: ClientSession) -> None:
        """Forget a client that said goodbye or vanished: its subscriptions end."""
        self.market_data.drop(session)
        self.bus.clients.pop(session.identity, None)

    def named(self) -> list[ClientSession]:
        """Every session that said hello (strategies, the CLI, the API): broadcast targets."""
        return [s for s in self.bus.sessions() if s.name]

    def order_targets(self, owner: str, session: Optional[ClientSession] = None) -> list[ClientSession]:
        """Who hears of an order: the session that asked, and the order's owner by name.

        An order no client placed (a broker's stop loss / take profit close) changed the
        account's positions under every strategy, so every named client is told.
        """
        targets = {}
        if session is not None:
            targets[session.identity] = session
        identity = self._identities.get(owner)
        if identity is not None and identity in self.bus.clients:
            targets[identity] = self.bus.clients[identity]
        elif not owner and session is None:
            targets.update((s.identity, s) for s in self.named())
        return list(targets.values())
