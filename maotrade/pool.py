"""Many accounts at once from a script: ``AccountPool`` over running engines' buses.

    async with AccountPool(["501", "502"], data_dir="~/maotrade") as pool:
        for r in await pool.get_balances_parallel():
            print(r.account_id, r.result if r.success else r.error)

Every ``*_parallel`` call asks all accounts at the same time (one bus connection and one
thread per account) and returns one ``AccountResult`` per account, in the pool's order:
one account's failure, a broker down or an engine that does not answer, never hides
another's result. Reads of broker state (account info, positions, balances) fail for an
account that is not ``ready``, since the engine could not vouch for them.
"""
from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, Union

import zmq

from maotrade.client import EngineClient, engine_address
from maotrade.errors import ConfigError, MAOTradeError, ProtocolError
from maotrade.protocol import Message, from_client, to_client

READY = "ready"


@dataclass
class AccountResult:
    """The outcome of one pool call for one account."""

    account_id: str
    success: bool
    result: Any = None
    error: Optional[str] = None


class PoolAccount:
    """One account's connection to its engine; what ``execute_parallel`` hands to ``func``."""

    def __init__(self, account_id: str, address: str, ctx: zmq.Context, timeout: float):
        self.account_id = account_id
        self.address = address
        self.timeout = timeout
        self._client = EngineClient(address, name=f"pool-{account_id}", ctx=ctx)
        self._lock = threading.Lock()

    def request(self, msg: Message, answer_type: str, before: Iterable[Message] = (),
                match: Optional[Callable[[dict], bool]] = None) -> dict:
        """Send ``before`` then ``msg`` (``from_client`` structs) to the engine; return the
        answer of ``answer_type`` (a ``to_client`` struct's ``TYPE``), blocking.

        Raises ``ProtocolError`` with the engine's reason if it refused any of them.
        """
        with self._lock:
            self._client.receive(0)  # drop what nobody waits for
            return self._client.request(msg, answer_type, timeout=self.timeout, match=match, before=before)

    def state(self) -> dict:
        """The engine's view of this account (``account`` answer)."""
        return self.request(from_client.AccountRequest(account=self.account_id), to_client.AccountReport.TYPE,
                            match=lambda m: m.get("account") == self.account_id)

    def ready_state(self) -> dict:
        """Like ``state`` but raise unless the account is ready."""
        view = self.state()
        if view.get("state") != READY:
            reason = f" ({view['reason']})" if view.get("reason") else ""
            raise MAOTradeError(f"account {self.account_id} is {view.get('state')}{reason}")
        return view

    def place(self, order: dict) -> dict:
        """Place one order on this account; return the engine's first answer about it."""
        from maotrade.order import new_client_order_id

        fields = {k: v for k, v in order.items() if k not in ("account", "type", "v")}
        key = fields.setdefault("client_order_id", new_client_order_id("pool"))
        fields.setdefault("source", "manual")
        kind = from_client.OrderClose if fields.get("action") == "close" else from_client.OrderOpen
        # What the request does not carry (``action`` chose its kind) stays here.
        request = kind(account=self.account_id, **{k: v for k, v in fields.items() if k in kind.__struct_fields__})
        answer = self.request(request, to_client.Order.TYPE, match=lambda m: m.get("client_order_id") == key)
        return {k: v for k, v in answer.items() if k not in ("type", "v")}

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._client.close()


def split_notional(total: float, buying_power: Mapping[str, float], decimals: int = 2) -> dict[str, float]:
    """Split ``total`` across accounts in proportion to their buying power.

    Accounts with no (or negative) buying power get 0. Shares are rounded down to
    ``decimals`` so the parts never add up to more than ``total``.
    """
    if total < 0:
        raise ValueError("total notional must not be negative")
    power = {a: max(0.0, float(p or 0.0)) for a, p in buying_power.items()}
    whole = sum(power.values())
    if whole <= 0:
        return {a: 0.0 for a in power}
    scale = 10 ** decimals
    return {a: int(total * p / whole * scale) / scale for a, p in power.items()}


class AccountPool:
    """Parallel operations over many accounts of one or more running engines.

    ``accounts`` is a list of account ids (all on the engine at ``address`` or running on
    ``data_dir``), or a mapping of account id -> engine bus address.
    """

    def __init__(self, accounts: Union[Iterable[str], Mapping[str, str]], address: Optional[str] = None,
                 data_dir: Optional[Union[str, Path]] = None, timeout: float = 10.0):
        if isinstance(accounts, Mapping):
            self.addresses = {str(a): addr for a, addr in accounts.items()}
        else:
            ids = [str(a) for a in accounts]
            if address is None:
                where = data_dir or os.environ.get("MAOTRADE_DATA_DIR")
                if where is None:
                    raise ConfigError("AccountPool needs address=, data_dir= or an {account: address} mapping")
                address = engine_address(where)
            self.addresses = {a: address for a in ids}
        if not self.addresses:
            raise ConfigError("AccountPool needs at least one account")
        self.timeout = timeout
        self._ctx: Optional[zmq.Context] = None
        self.members: dict[str, PoolAccount] = {}

    @property
    def account_ids(self) -> list[str]:
        """The pool's accounts, in order."""
        return list(self.addresses)

    async def __aenter__(self) -> "AccountPool":
        self._ctx = zmq.Context()
        self.members = {a: PoolAccount(a, addr, self._ctx, self.timeout) for a, addr in self.addresses.items()}
        return self

    async def __aexit__(self, *exc) -> None:
        for member in self.members.values():
            member.close()
        self.members = {}
        self._ctx.term()

    # -- the parallel core --------------------------------------------------------------
    async def execute_parallel(self, func: Callable[[PoolAccount], Union[Any, Awaitable[Any]]]) -> list[AccountResult]:
        """Run ``func(account)`` for every account at once (a coroutine function is awaited,
        a plain one runs on a thread); one ``AccountResult`` per account."""
        if not self.members:
            raise ConfigError("use the pool inside 'async with AccountPool(...) as pool:'")

        async def one(member: PoolAccount) -> AccountResult:
            try:
                if asyncio.iscoroutinefunction(func):
                    value = await func(member)
                else:
                    value = await asyncio.to_thread(func, member)
            except Exception as exc:  # the point of the pool: one failure is one result
                return AccountResult(member.account_id, False, None, _describe(exc))
            return AccountResult(member.account_id, True, value, None)

        return list(await asyncio.gather(*(one(m) for m in self.members.values())))

    # -- reads ----------------------------------------------------------------------------
    async def get_accounts_info_parallel(self) -> list[AccountResult]:
        """Each ready account's info (balance, equity, available, margin, P&L...)."""
        return await self.execute_parallel(lambda m: m.ready_state()["account_info"])

    async def get_positions_parallel(self) -> list[AccountResult]:
        """Each ready account's positions (engine view, with open P&L)."""
        return await self.execute_parallel(lambda m: m.ready_state()["portfolio"]["positions"])

    async def get_balances_parallel(self) -> list[AccountResult]:
        """Each ready account's balance, equity, available funds and currency."""
        def balance(member: PoolAccount) -> dict:
            info = member.ready_state()["account_info"] or {}
            return {k: info.get(k) for k in ("currency", "balance", "equity", "available")}
        return await self.execute_parallel(balance)

    async def get_orders_parallel(self, epic: Optional[str] = None, status: Optional[str] = None,
                                  limit: int = 500) -> list[AccountResult]:
        """Each account's journaled orders, newest first (filter by ``epic``/``status``)."""
        filters = {k: v for k, v in (("epic", epic), ("status", status)) if v is not None}
        return await self.execute_parallel(
            lambda m: m.request(from_client.OrdersRequest(account=m.account_id, limit=limit, **filters),
                                to_client.Orders.TYPE)["orders"])

    # -- actions ----------------------------------------------------------------------------
    async def place_orders_parallel(self, order_or_list: Union[dict, list[dict]]) -> list[AccountResult]:
        """Place one order on every account (a dict without ``account``), or a list of orders
        each naming its ``account``. A result fails if any of its orders was rejected."""
        if isinstance(order_or_list, dict):
            plan = {a: [dict(order_or_list)] for a in self.members}
        else:
            plan = {a: [] for a in self.members}
            for order in order_or_list:
                account = str(order.get("account", ""))
                if account not in plan:
                    raise ConfigError(f"order for account {account!r}, which is not in the pool")
                plan[account].append(order)

        def place(member: PoolAccount):
            answers = [member.place(o) for o in plan[member.account_id]]
            refused = [a for a in answers if a.get("status") == "REJECTED" and not a.get("duplicate")]
            if refused:
                raise MAOTradeError("; ".join(f"order {a['client_order_id']} rejected ({a.get('code') or 'broker'}): "
                                              f"{a.get('reason')}" for a in refused))
            return answers[0] if isinstance(order_or_list, dict) else answers

        return await self.execute_parallel(place)

    async def cancel_orders_parallel(self, client_order_ids: Optional[Iterable[str]] = None,
                                     epic: Optional[str] = None) -> list[AccountResult]:
        """Cancel the given client order ids where they exist, or else every working order
        (of ``epic`` if given); each result lists the ids asked to cancel."""
        wanted = set(client_order_ids) if client_order_ids is not None else None

        def cancel(member: PoolAccount) -> list[str]:
            orders = member.request(from_client.OrdersRequest(account=member.account_id, limit=5000),
                                    to_client.Orders.TYPE)["orders"]
            targets = [o["client_order_id"] for o in orders if not o.get("done")
                       and (wanted is None or o["client_order_id"] in wanted)
                       and (epic is None or o["epic"] == epic)]
            if targets:
                member.request(from_client.OrdersRequest(account=member.account_id, limit=1), to_client.Orders.TYPE,
                               before=[from_client.OrderCancel(account=member.account_id, client_order_id=t)
                                       for t in targets])
            return targets

        return await self.execute_parallel(cancel)

    async def split_notional_by_buying_power(self, total: float) -> dict[str, float]:
        """Split ``total`` notional across the ready accounts by their available funds."""
        results = await self.get_balances_parallel()
        return split_notional(total, {r.account_id: r.result["available"] for r in results if r.success})


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, MAOTradeError) else f"{type(exc).__name__}: {text}"
