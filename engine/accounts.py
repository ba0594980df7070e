"""The account book: what the engine knows of each account it runs, and its lifecycle.

One ``AccountRuntime`` per account, kept in one ``AccountBook`` that the loop, the order
router, the operator handlers and the risk view all read. The book holds no sockets:
it changes state and says whether anything changed; the loop tells the clients.

Lifecycle: STARTING (worker spawned) -> SYNCING (the engine asks for balances,
positions, open orders and subscriptions again) -> READY (every answer arrived; what is
still unanswered is asked again after 5 s, the wait doubling up to 30 s). A broker's
reconnect goes back through SYNCING; a worker's death through RESTARTING.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

from maotrade.errors import InvalidOrder, OrderRefused


#: seconds before unanswered sync requests are asked again; the wait doubles up to the max.
SYNC_RETRY_FIRST_S = 5.0
SYNC_RETRY_MAX_S = 30.0

class AccountState:
    """Engine-side lifecycle of an account."""

    STARTING = "starting"
    SYNCING = "syncing"
    READY = "ready"
    RECONNECTING = "reconnecting"
    RESTARTING = "restarting"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


@dataclass
class AccountRuntime:
    """What the engine knows of one account while it runs."""

    account: str
    document: dict
    state: str = AccountState.STARTING
    reason: str = ""
    account_info: dict = field(default_factory=dict)
    broker_portfolio: dict = field(default_factory=dict)
    capabilities: dict = field(default_factory=dict)
    data_frames: dict = field(default_factory=dict)
    pending_sync: set = field(default_factory=set)
    last_price: dict = field(default_factory=dict)  # epic -> last close
    syncs: int = 0
    info_due: float = 0.0  # monotonic time before which no balance refresh is asked
    #: while SYNCING: when the unanswered sync requests are asked again, and how long the
    #: wait after that is (a broker may drop a request, e.g. out of request allowance).
    sync_retry_at: float = 0.0
    sync_retry_s: float = 0.0

    @property
    def broker_name(self) -> Optional[str]:
        """The broker named in the account's document."""
        return self.document.get("brokerName")

    @property
    def epic_mapping(self) -> dict:
        """MAOTrade instrument code -> the broker's, from the account's document."""
        return self.document.get("epicMapping") or {}

    def broker_epic(self, epic: str) -> str:
        """The broker's code for ``epic``: the one place an instrument is resolved.

        An account with a mapping trades only what it maps (anything else is refused with
        ``unknown_instrument``); an account without one passes the code through."""
        mapping = self.epic_mapping
        if not mapping:
            return epic
        if epic not in mapping:
            raise OrderRefused("unknown_instrument", f"unknown instrument {epic!r} for account {self.account} "
                                                     "(not in its epic mapping)")
        return mapping[epic]


class AccountBook:
    """Every account of one engine, by id, with readiness and the sync state machine."""

    def __init__(self, documents: list[dict]):
        self._accounts: dict[str, AccountRuntime] = {}
        for document in documents:
            account = str(document["idAccount"])
            self._accounts[account] = AccountRuntime(account, document)

    # -- lookup ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        return iter(self._accounts)

    def __len__(self) -> int:
        return len(self._accounts)

    def __contains__(self, account: object) -> bool:
        return account in self._accounts

    def __getitem__(self, account: str) -> AccountRuntime:
        return self._accounts[account]

    def get(self, account: str) -> Optional[AccountRuntime]:
        """The account ``account``, or None."""
        return self._accounts.get(account)

    def items(self):
        """(account id, runtime) pairs, in configuration order."""
        return self._accounts.items()

    def values(self):
        """Every runtime, in configuration order."""
        return self._accounts.values()

    def lookup(self, msg: dict) -> AccountRuntime:
        """The account a client message names (its only account when it names none).

        Raises ``InvalidOrder`` for an account this engine does not run.
        """
        account = str(msg.get("account", ""))
        if account not in self._accounts:
            if not account and len(self._accounts) == 1:
                return next(iter(self._accounts.values()))
            raise InvalidOrder(f"unknown account {account!r}")
        return self._accounts[account]

    def document(self, account: str) -> dict:
        """The account's configuration document."""
        return self._accounts[account].document

    def capabilities(self, account: str) -> dict:
        """What the account's broker declared in its init result (empty before it did)."""
        return self._accounts[account].capabilities

    def not_ready_reason(self, account: str) -> str:
        """Why ``account`` cannot take orders now ('' when it can)."""
        runtime = self._accounts.get(account)
        if runtime is None:
            return f"unknown account {account!r}"
        if runtime.state != AccountState.READY:
            detail = f" ({runtime.reason})" if runtime.reason else ""
            return f"account {account} is {runtime.state}{detail}; order not sent"
        return ""

    # -- lifecycle -----------------------------------------------------------------------
    @staticmethod
    def set_state(runtime: AccountRuntime, state: str, reason: str) -> bool:
        """Move ``runtime`` to ``state``; return whether anything changed.

        A DISCONNECTED account (fatal, or the broker gave up) stays so when a late
        "reconnecting" arrives: only a new connection or a restart moves it on.
        """
        if runtime.state == state and runtime.reason == reason:
            return False
        if runtime.state == AccountState.DISCONNECTED and state == AccountState.RECONNECTING:
            return False
        runtime.state, runtime.reason = state, reason
        return True

    @staticmethod
    def begin_sync(runtime: AccountRuntime, pending: set) -> None:
        """Record that the engine has asked for every item of ``pending``."""
        runtime.syncs += 1
        runtime.pending_sync = set(pending)
        runtime.sync_retry_s = SYNC_RETRY_FIRST_S
        runtime.sync_retry_at = time.monotonic() + SYNC_RETRY_FIRST_S

    @staticmethod
    def sync_retry_due(runtime: AccountRuntime, now: float) -> set:
        """The sync items still unanswered when their retry is due (then the next retry is
        set, the wait doubling up to ``SYNC_RETRY_MAX_S``); else an empty set."""
        if runtime.state != AccountState.SYNCING or not runtime.pending_sync or now < runtime.sync_retry_at:
            return set()
        runtime.sync_retry_s = min(SYNC_RETRY_MAX_S, runtime.sync_retry_s * 2)
        runtime.sync_retry_at = now + runtime.sync_retry_s
        return set(runtime.pending_sync)

    @staticmethod
    def sync_answered(runtime: AccountRuntime, item: str) -> bool:
        """Tick off one answered sync item; return True when it was the last one."""
        if runtime.state != AccountState.SYNCING or item not in runtime.pending_sync:
            return False
        runtime.pending_sync.discard(item)
        return not runtime.pending_sync
