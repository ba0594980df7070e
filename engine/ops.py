"""Operating the running engine: pre-trade risk on its state, and the bus requests of
operators and outside systems (risk limits, kill switch, order queries, account views,
cancel-all and flatten, balance history).

``Operations`` is the glue between the engine's state and the pure ``engine.risk`` rules.
What must outlive a restart lives in ``risk.sqlite`` (``engine.risk_state``). Its handlers
hold no sockets and no reference to the engine loop: each takes the requesting client's
name and the message and *returns* a ``Reply`` (answers for that client, orders to
announce, events to publish, requests for workers), which the loop sends. Each runs
inside one engine turn, so a kill switch set by a message stops every order the engine
handles after it.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from engine.accounts import AccountBook
from engine.journal import Journal
from engine.orders import Dispatch, OrderOutcome, OrderRouter
from engine.risk import KillMode, RiskEngine, RiskSettings
from engine.risk_state import RiskState
from engine.risk_view import EngineRiskView
from engine.supervisor import Supervisor
from engine.views import portfolio_view
from maotrade.errors import InvalidOrder, MAOTradeError, OrderRefused, ProtocolError
from maotrade.messages import ClientToEngine as FromClient, EngineToClient as ToClient, message
from maotrade.order import BaseOrder, OrderAction, OrderSource, OrderStatus, OrderType, new_client_order_id

if TYPE_CHECKING:  # market_data imports the bus; the handlers only read it
    from engine.market_data import MarketData

log = logging.getLogger(__name__)

GLOBAL = "*"
ORDER_SOURCES = OrderSource.CLIENT
MAX_LISTED_ORDERS = 5000
MAX_BALANCE_POINTS = 2000
FLATTEN_PREFIX = "flat"  # client order id prefix of the closing orders flatten places


@dataclass
class Reply:
    """What one operator request produced, for the engine loop to send."""

    to_client: list[dict] = field(default_factory=list)  # answers for the client that asked
    events: list[dict] = field(default_factory=list)  # published to observers
    dispatch: list[Dispatch] = field(default_factory=list)  # requests for account workers
    orders: list[OrderOutcome] = field(default_factory=list)  # orders to announce (asker, owner, observers)


Handler = Callable[[str, dict], Reply]


class Operations:
    """Risk checks and operator requests of one engine.

    Reads the account book, the journal, the supervisor (when a worker was last heard
    from) and the market data (stale streams, subscriptions); the ``OrderRouter`` is
    attached once built, because the router itself is built with ``risk_check``.
    """

    def __init__(self, accounts: AccountBook, journal: Journal, data_dir: Path, supervisor: Supervisor,
                 market_data: "MarketData", settings: Optional[RiskSettings] = None):
        self.accounts = accounts
        self.journal = journal
        self.supervisor = supervisor
        self.market_data = market_data
        self.router: Optional[OrderRouter] = None
        self.risk = RiskEngine(settings)
        for account, runtime in accounts.items():
            self.risk.set_account_limits(account, (runtime.document.get("accountConfig") or {}).get("risk"))
        self.state = RiskState(Path(data_dir) / "risk.sqlite")
        self.state.load(self.risk)
        self.view = EngineRiskView(accounts, journal, self.state)
        for scope, mode in self.risk.kill.items():
            if mode != KillMode.ACTIVE:
                log.warning("event=kill_switch_restored scope=%s mode=%s", scope, mode)

    def attach(self, router: OrderRouter) -> None:
        """Give the handlers and the risk view the router (built with ``risk_check``)."""
        self.router = router
        self.view.orders = router

    # -- the order path ----------------------------------------------------------------
    def risk_check(self, order: BaseOrder) -> None:
        """``OrderRouter``'s risk callback: pass, or raise ``OrderRefused``."""
        if order.source not in ORDER_SOURCES and order.source != OrderSource.EXTERNAL:
            raise OrderRefused("invalid_source", f"order source must be one of {', '.join(sorted(ORDER_SOURCES))}")
        self.risk.check(order, self.view)

    def close(self) -> None:
        """Close the risk state file."""
        self.state.close()

    # -- bus handlers --------------------------------------------------------------------
    def client_handlers(self) -> dict[str, Handler]:
        """Entries for the engine's client message table: type -> ``handler(client_name, msg)``."""
        return {
            FromClient.RISK_STATUS: self._on_risk_status,
            FromClient.RISK_SET: self._on_risk_set,
            FromClient.KILL_SWITCH: self._on_kill_switch,
            FromClient.ORDERS_REQUEST: self._on_orders_request,
            FromClient.ORDER_REFRESH: self._on_order_refresh,
            FromClient.ACCOUNT_REQUEST: self._on_account_request,
            FromClient.CANCEL_ALL: self._on_cancel_all,
            FromClient.FLATTEN: self._on_flatten,
            FromClient.BALANCE_HISTORY_REQUEST: self._on_balance_history,
        }

    def snapshot(self) -> dict:
        """Limits, kill switch and counters as the ``risk`` answer carries them."""
        data = self.risk.snapshot(self.accounts)
        data["daily_pnl"] = {a: self.view.daily_pnl(a) for a in self.accounts}
        data["orders_refused_all_reasons"] = self.router.rejected_count
        return data

    def _scope(self, msg: dict) -> str:
        account = msg.get("account")
        if account in (None, "", GLOBAL):
            return GLOBAL
        account = str(account)
        if account not in self.accounts:
            raise InvalidOrder(f"unknown account {account!r}")
        return account

    def _on_risk_status(self, client: str, msg: dict) -> Reply:
        return Reply([message(ToClient.RISK, risk=self.snapshot())])

    def _on_risk_set(self, client: str, msg: dict) -> Reply:
        scope = self._scope(msg)
        if msg.get("reset"):
            self.risk.clear_override(scope)
            self.state.save_override(scope, None)
        limits = msg.get("limits")
        if limits is not None:
            self.risk.set_override(scope, limits)
            self.state.save_override(scope, self.risk.overrides[scope])
        elif not msg.get("reset"):
            raise ProtocolError("risk_set needs 'limits' (an object) or 'reset': true")
        self.journal.audit(scope, "risk_set", {"limits": limits, "reset": bool(msg.get("reset")), "by": client})
        log.warning("event=risk_override scope=%s limits=%s reset=%s by=%s", scope, json.dumps(limits),
                    bool(msg.get("reset")), client or "client")
        return Reply([message(ToClient.RISK, risk=self.snapshot())])

    def _on_kill_switch(self, client: str, msg: dict) -> Reply:
        scope = self._scope(msg)
        mode = msg.get("mode")
        if mode not in KillMode.ALL:
            raise ProtocolError(f"kill_switch 'mode' must be one of {', '.join(KillMode.ORDER)}, got {mode!r}")
        reply = Reply()
        self._set_kill(client, scope, mode, reply)
        reply.to_client.append(message(ToClient.RISK, risk=self.snapshot()))
        return reply

    def _on_orders_request(self, client: str, msg: dict) -> Reply:
        filters = {}
        for name in ("account", "epic", "status", "source"):
            value = msg.get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise ProtocolError(f"orders_request '{name}' must be a string")
                filters[name] = value
        for name in ("since", "until"):
            value = msg.get(name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ProtocolError(f"orders_request '{name}' must be epoch milliseconds (integer)")
                filters[name] = value
        limit = msg.get("limit", 500)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LISTED_ORDERS:
            raise ProtocolError(f"orders_request 'limit' must be an integer from 1 to {MAX_LISTED_ORDERS}")
        key = msg.get("client_order_id")
        if key is not None:
            account = filters.get("account")
            if account is None:
                raise ProtocolError("orders_request with 'client_order_id' needs 'account'")
            order = self.router.get(account, str(key))
            orders = [order] if order is not None else []
        else:
            orders = self.journal.list_orders(limit=limit, **filters)
        return Reply([message(ToClient.ORDERS, orders=[_view(o) for o in orders], request_id=msg.get("request_id"))])

    def _on_order_refresh(self, client: str, msg: dict) -> Reply:
        runtime = self.accounts.lookup(msg)
        key = msg.get("client_order_id")
        if not isinstance(key, str) or not key:
            raise ProtocolError("order_refresh needs 'client_order_id'")
        order = self.router.get(runtime.account, key)
        if order is None:
            raise InvalidOrder(f"unknown order {key} on account {runtime.account}")
        reason = self.accounts.not_ready_reason(runtime.account)
        if reason:
            raise InvalidOrder(reason)
        return Reply([message(ToClient.ORDERS, orders=[_view(order)], request_id=msg.get("request_id"))],
                     dispatch=[self.router.status_query(order)])

    def _on_account_request(self, client: str, msg: dict) -> Reply:
        runtime = self.accounts.lookup(msg)
        return Reply([message(ToClient.ACCOUNT, account=runtime.account, state=runtime.state,
                              reason=runtime.reason, broker=runtime.broker_name,
                              account_info=runtime.account_info,
                              portfolio=portfolio_view(self.journal, self.router, runtime),
                              kill_switch=self.risk.mode(runtime.account),
                              daily_pnl=self.view.daily_pnl(runtime.account),
                              last_heard_s=self._silent_for(runtime.account),
                              stale_data=self.market_data.stale.stale(runtime.account),
                              subscriptions=len(self.market_data.streams(runtime.account)))])

    def _silent_for(self, account: str) -> Optional[float]:
        """Seconds since the account's worker was last heard from (None before it started)."""
        handle = self.supervisor.workers.get(account)
        if handle is None or not handle.last_seen:
            return None
        return round(time.monotonic() - handle.last_seen, 1)

    def _on_balance_history(self, client: str, msg: dict) -> Reply:
        runtime = self.accounts.lookup(msg)
        since = msg.get("since", 0)
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ProtocolError("balance_history_request 'since' must be epoch milliseconds (integer)")
        return Reply([message(ToClient.BALANCE_HISTORY, account=runtime.account,
                              points=self.journal.balance_history(runtime.account, since, MAX_BALANCE_POINTS),
                              fills=self.journal.recent_fills(runtime.account, 100),
                              request_id=msg.get("request_id"))])

    # -- operator actions: cancel-all and flatten ---------------------------------------------
    def _on_cancel_all(self, client: str, msg: dict) -> Reply:
        scope = self._scope(msg)
        reply, result = Reply(), self._action_result("cancel_all", scope, client)
        for account in self._scope_accounts(scope):
            self._cancel_working(account, result, reply)
        return self._finish_action(result, reply)

    def _on_flatten(self, client: str, msg: dict) -> Reply:
        """Cancel every working order, then close every position at market.

        The scope's kill switch is left at reduce_only (from active or halted) first:
        flattening means no new risk, and halted would refuse the closing orders. A market
        close already working is left to finish and its epic is not closed twice; resting
        closes (stop loss / take profit legs, limit closes) are cancelled like the rest.
        """
        scope = self._scope(msg)
        reply, result = Reply(), self._action_result("flatten", scope, client)
        if self.risk.kill.get(scope, KillMode.ACTIVE) != KillMode.REDUCE_ONLY:
            self._set_kill(client, scope, KillMode.REDUCE_ONLY, reply)
        result["kill_switch"] = KillMode.REDUCE_ONLY
        for account in self._scope_accounts(scope):
            closing = {o.epic for o in self.router.open_orders(account) if _is_market_close(o)}
            self._cancel_working(account, result, reply, keep=_is_market_close)
            for position in self.journal.positions(account):
                if position.is_flat:
                    continue
                if position.epic in closing:
                    result["refused"].append({"account": account, "epic": position.epic,
                                              "reason": "a market close is already working; not closed twice"})
                    continue
                self._close_position(client, account, position.epic, result, reply)
        return self._finish_action(result, reply)

    def _scope_accounts(self, scope: str) -> list[str]:
        return list(self.accounts) if scope == GLOBAL else [scope]

    @staticmethod
    def _action_result(action: str, scope: str, client: str) -> dict:
        return {"action": action, "account": None if scope == GLOBAL else scope, "by": client or "client",
                "cancelled": [], "closing": [], "refused": []}

    def _cancel_working(self, account: str, result: dict, reply: Reply,
                        keep: Callable[[BaseOrder], bool] = lambda order: False) -> None:
        for order in self.router.open_orders(account):
            if keep(order):
                continue
            try:  # the router's checks of a client's own cancel request
                outcome = self.router.cancel(account, order.client_order_id)
                self.router.require_sendable(outcome)
            except MAOTradeError as exc:
                result["refused"].append({"account": account, "client_order_id": order.client_order_id,
                                          "reason": str(exc)})
                continue
            reply.dispatch.extend(outcome.dispatches)
            if outcome.told_now:
                reply.orders.append(outcome)
            result["cancelled"].append({"account": account, "client_order_id": order.client_order_id})

    def _close_position(self, client: str, account: str, epic: str, result: dict, reply: Reply) -> None:
        key = new_client_order_id(FLATTEN_PREFIX)
        request = message(FromClient.ORDER_CLOSE, account=account, epic=epic, client_order_id=key,
                          source=OrderSource.OPERATOR)
        try:  # the path of a client's close request: journal, risk, route
            outcome = self.router.close(request, source=OrderSource.OPERATOR, strategy=client)
        except MAOTradeError as exc:
            result["refused"].append({"account": account, "epic": epic, "reason": str(exc)})
            return
        reply.dispatch.extend(outcome.dispatches)
        reply.orders.append(outcome)
        order = outcome.order
        if order is None or order.status == OrderStatus.REJECTED:
            result["refused"].append({"account": account, "epic": epic, "client_order_id": key,
                                      "reason": order.reason if order else "not journaled"})
        else:
            result["closing"].append({"account": account, "epic": epic, "client_order_id": key, "qty": order.qty})

    def _finish_action(self, result: dict, reply: Reply) -> Reply:
        scope = result["account"] or GLOBAL
        self.journal.audit(scope, result["action"], {k: result[k] for k in ("by", "cancelled", "closing", "refused")})
        log.warning("event=%s scope=%s cancelled=%d closing=%d refused=%d by=%s", result["action"], scope,
                    len(result["cancelled"]), len(result["closing"]), len(result["refused"]), result["by"])
        answer = message(ToClient.OPERATOR_ACTION, **result)
        reply.to_client.append(answer)
        reply.events.append(answer)
        return reply

    def _set_kill(self, client: str, scope: str, mode: str, reply: Reply) -> None:
        self.risk.set_kill(scope, mode)
        self.state.save_kill(scope, mode)
        self.journal.audit(scope, "kill_switch", {"mode": mode, "by": client})
        log.warning("event=kill_switch scope=%s mode=%s by=%s", scope, mode, client or "client")
        reply.events.append(message(ToClient.KILL_SWITCH, account=None if scope == GLOBAL else scope, mode=mode))


def _is_market_close(order: BaseOrder) -> bool:
    """A close executing now (not a resting stop loss, take profit or limit close)."""
    return order.action == OrderAction.CLOSE and order.order_type == OrderType.MARKET


def _view(order: BaseOrder) -> dict:
    data = order.to_dict()  # with its fills
    data["done"] = order.status in OrderStatus.DONE
    return data
