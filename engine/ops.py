"""Operating the running engine: pre-trade risk on its state, and the bus requests of
operators and outside systems (risk limits, kill switch, order queries, account views).

``Operations`` is the glue between ``Engine`` and the pure ``engine.risk`` rules. It
keeps what must outlive a restart (kill switch modes, run-time overrides, each day's
P&L baseline) in ``risk.sqlite`` beside the journal. Its bus handlers are merged into the
engine's client handler table; each runs inside one engine turn, so a kill switch set
by a message stops every order the engine handles after it.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from engine.risk import KillMode, RiskEngine, RiskSettings
from maotrade.errors import InvalidOrder, MAOTradeError, OrderRefused, ProtocolError
from maotrade.messages import ClientToEngine, EngineToClient, message
from maotrade.order import BaseOrder, OrderAction, OrderSource, OrderStatus, OrderType, new_client_order_id

if TYPE_CHECKING:  # the engine imports this module; no cycle at run time
    from engine.bus import ClientSession
    from engine.core import Engine

log = logging.getLogger(__name__)

GLOBAL = "*"
ORDER_SOURCES = OrderSource.CLIENT
MAX_LISTED_ORDERS = 5000
MAX_BALANCE_POINTS = 2000
FLATTEN_PREFIX = "flat"  # client order id prefix of the closing orders flatten places

SCHEMA = """
CREATE TABLE IF NOT EXISTS kill_switch (scope TEXT PRIMARY KEY, mode TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS overrides (scope TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS day_baseline (account TEXT NOT NULL, day TEXT NOT NULL, pnl REAL NOT NULL,
                                         PRIMARY KEY (account, day));
"""


class RiskState:
    """Kill switch modes, overrides and daily baselines that survive a restart."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._baselines: dict[tuple[str, str], float] = {}

    def load(self, risk: RiskEngine) -> None:
        """Restore kill switch modes and overrides into ``risk``."""
        for scope, mode in self.db.execute("SELECT scope, mode FROM kill_switch"):
            risk.kill[scope] = mode
        for scope, data in self.db.execute("SELECT scope, data FROM overrides"):
            risk.overrides[scope] = json.loads(data)

    def save_kill(self, scope: str, mode: str) -> None:
        """Persist one kill switch mode."""
        self.db.execute("INSERT OR REPLACE INTO kill_switch (scope, mode) VALUES (?, ?)", (scope, mode))

    def save_override(self, scope: str, data: Optional[dict]) -> None:
        """Persist (or with None, drop) one scope's overrides."""
        if data is None:
            self.db.execute("DELETE FROM overrides WHERE scope = ?", (scope,))
        else:
            self.db.execute("INSERT OR REPLACE INTO overrides (scope, data) VALUES (?, ?)",
                            (scope, json.dumps(data, sort_keys=True)))

    def baseline(self, account: str, day: str, current: float) -> float:
        """The account's P&L when ``day`` began for the engine (``current`` if first asked now)."""
        cached = self._baselines.get((account, day))
        if cached is not None:
            return cached
        self.db.execute("INSERT OR IGNORE INTO day_baseline (account, day, pnl) VALUES (?, ?, ?)",
                        (account, day, current))
        value = self.db.execute("SELECT pnl FROM day_baseline WHERE account = ? AND day = ?",
                                (account, day)).fetchone()[0]
        self._baselines[(account, day)] = value
        return value

    def close(self) -> None:
        """Close the file."""
        self.db.close()


class EngineRiskView:
    """``engine.risk.RiskView`` over the running engine's journal and account state."""

    def __init__(self, engine: "Engine", state: RiskState):
        self.engine = engine
        self.state = state

    def accounts(self) -> Iterable[str]:
        """Every account the engine runs."""
        return list(self.engine.accounts)

    def position(self, account: str, epic: str) -> float:
        """Signed net position from the journal."""
        return self.engine.journal.position(account, epic).qty

    def open_orders(self, account: str) -> list[BaseOrder]:
        """Working orders of the account."""
        return self.engine.router.open_orders(account)

    def price(self, account: str, epic: str) -> Optional[float]:
        """Last bar close, else the broker's mark of an open position."""
        runtime = self.engine.accounts.get(account)
        if runtime is None:
            return None
        price = runtime.last_price.get(epic)
        if price:
            return float(price)
        for position in runtime.broker_portfolio.get("positions", []):
            if position.get("epic") == epic and position.get("market_price"):
                return float(position["market_price"])
        return None

    def total_pnl(self, account: str) -> float:
        """Realized P&L of every position plus open P&L at the last known prices."""
        total = 0.0
        for position in self.engine.journal.positions(account):
            total += position.realized_pnl
            price = self.price(account, position.epic)
            if price is not None:
                total += position.unrealized_pnl(price)
        return total

    def daily_pnl(self, account: str) -> Optional[float]:
        """P&L since the UTC day began (or since the engine first looked that day)."""
        current = self.total_pnl(account)
        day = dt.datetime.now(dt.timezone.utc).date().isoformat()
        return current - self.state.baseline(account, day, current)


class Operations:
    """Risk checks and operator requests of one engine."""

    def __init__(self, engine: "Engine", settings: Optional[RiskSettings] = None):
        self.engine = engine
        self.risk = RiskEngine(settings)
        for account, runtime in engine.accounts.items():
            self.risk.set_account_limits(account, (runtime.document.get("accountConfig") or {}).get("risk"))
        self.state = RiskState(Path(engine.data_dir) / "risk.sqlite")
        self.state.load(self.risk)
        self.view = EngineRiskView(engine, self.state)
        for scope, mode in self.risk.kill.items():
            if mode != KillMode.ACTIVE:
                log.warning("event=kill_switch_restored scope=%s mode=%s", scope, mode)

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
    def client_handlers(self) -> dict:
        """Entries for the engine's client message table."""
        return {
            ClientToEngine.RISK_STATUS: self._on_risk_status,
            ClientToEngine.RISK_SET: self._on_risk_set,
            ClientToEngine.KILL_SWITCH: self._on_kill_switch,
            ClientToEngine.ORDERS_REQUEST: self._on_orders_request,
            ClientToEngine.ORDER_REFRESH: self._on_order_refresh,
            ClientToEngine.ACCOUNT_REQUEST: self._on_account_request,
            ClientToEngine.CANCEL_ALL: self._on_cancel_all,
            ClientToEngine.FLATTEN: self._on_flatten,
            ClientToEngine.BALANCE_HISTORY_REQUEST: self._on_balance_history,
        }

    def snapshot(self) -> dict:
        """Limits, kill switch and counters as the ``risk`` answer carries them."""
        data = self.risk.snapshot(self.engine.accounts)
        data["daily_pnl"] = {a: self.view.daily_pnl(a) for a in self.engine.accounts}
        data["orders_refused_all_reasons"] = self.engine.router.rejected_count
        return data

    def _scope(self, msg: dict) -> str:
        account = msg.get("account")
        if account in (None, "", GLOBAL):
            return GLOBAL
        account = str(account)
        if account not in self.engine.accounts:
            raise InvalidOrder(f"unknown account {account!r}")
        return account

    def _on_risk_status(self, session: "ClientSession", msg: dict) -> None:
        session.put(message(EngineToClient.RISK, risk=self.snapshot()))

    def _on_risk_set(self, session: "ClientSession", msg: dict) -> None:
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
        self.engine.journal.audit(scope, "risk_set", {"limits": limits, "reset": bool(msg.get("reset")),
                                                      "by": session.name})
        log.warning("event=risk_override scope=%s limits=%s reset=%s by=%s", scope, json.dumps(limits),
                    bool(msg.get("reset")), session.name or "client")
        session.put(message(EngineToClient.RISK, risk=self.snapshot()))

    def _on_kill_switch(self, session: "ClientSession", msg: dict) -> None:
        scope = self._scope(msg)
        mode = msg.get("mode")
        if mode not in KillMode.ALL:
            raise ProtocolError(f"kill_switch 'mode' must be one of {', '.join(KillMode.ORDER)}, got {mode!r}")
        self._set_kill(session, scope, mode)
        session.put(message(EngineToClient.RISK, risk=self.snapshot()))

    def _on_orders_request(self, session: "ClientSession", msg: dict) -> None:
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
            order = self.engine.router.get(account, str(key))
            orders = [order] if order is not None else []
        else:
            orders = self.engine.journal.list_orders(limit=limit, **filters)
        session.put(message(EngineToClient.ORDERS, orders=[_view(o) for o in orders],
                            request_id=msg.get("request_id")))

    def _on_order_refresh(self, session: "ClientSession", msg: dict) -> None:
        runtime = self.engine.accounts.lookup(msg)
        key = msg.get("client_order_id")
        if not isinstance(key, str) or not key:
            raise ProtocolError("order_refresh needs 'client_order_id'")
        order = self.engine.router.get(runtime.account, key)
        if order is None:
            raise InvalidOrder(f"unknown order {key} on account {runtime.account}")
        reason = self.engine.accounts.not_ready_reason(runtime.account)
        if reason:
            raise InvalidOrder(reason)
        self.engine._dispatch(self.engine.router.status_query(order))
        session.put(message(EngineToClient.ORDERS, orders=[_view(order)], request_id=msg.get("request_id")))

    def _on_account_request(self, session: "ClientSession", msg: dict) -> None:
        runtime = self.engine.accounts.lookup(msg)
        session.put(message(EngineToClient.ACCOUNT, account=runtime.account, state=runtime.state,
                            reason=runtime.reason, broker=runtime.document.get("brokerName"),
                            account_info=runtime.account_info, portfolio=self.engine.portfolio(runtime.account),
                            kill_switch=self.risk.mode(runtime.account),
                            daily_pnl=self.view.daily_pnl(runtime.account),
                            last_heard_s=self._silent_for(runtime.account),
                            stale_data=self.engine.stale.stale(runtime.account),
                            subscriptions=len(runtime.subscriptions)))

    def _silent_for(self, account: str) -> Optional[float]:
        """Seconds since the account's worker was last heard from (None before it started)."""
        handle = self.engine.supervisor.workers.get(account)
        if handle is None or not handle.last_seen:
            return None
        return round(time.monotonic() - handle.last_seen, 1)

    # -- operator actions: cancel-all and flatten ---------------------------------------------
    def _on_cancel_all(self, session: "ClientSession", msg: dict) -> None:
        scope = self._scope(msg)
        result = self._action_result("cancel_all", scope, session)
        for account in self._scope_accounts(scope):
            self._cancel_working(session, account, result)
        self._finish_action(session, result)

    def _on_flatten(self, session: "ClientSession", msg: dict) -> None:
        """Cancel every working order, then close every position at market.

        The scope's kill switch is left at reduce_only (from active or halted) first:
        flattening means no new risk, and halted would refuse the closing orders. A market
        close already working is left to finish and its epic is not closed twice; resting
        closes (stop loss / take profit legs, limit closes) are cancelled like the rest.
        """
        scope = self._scope(msg)
        result = self._action_result("flatten", scope, session)
        if self.risk.kill.get(scope, KillMode.ACTIVE) != KillMode.REDUCE_ONLY:
            self._set_kill(session, scope, KillMode.REDUCE_ONLY)
        result["kill_switch"] = KillMode.REDUCE_ONLY
        for account in self._scope_accounts(scope):
            closing = {o.epic for o in self.engine.router.open_orders(account) if _is_market_close(o)}
            self._cancel_working(session, account, result, keep=_is_market_close)
            for position in self.engine.journal.positions(account):
                if position.is_flat:
                    continue
                if position.epic in closing:
                    result["refused"].append({"account": account, "epic": position.epic,
                                              "reason": "a market close is already working; not closed twice"})
                    continue
                self._close_position(session, account, position.epic, result)
        self._finish_action(session, result)

    def _scope_accounts(self, scope: str) -> list[str]:
        return list(self.engine.accounts) if scope == GLOBAL else [scope]

    def _action_result(self, action: str, scope: str, session: "ClientSession") -> dict:
        return {"action": action, "account": None if scope == GLOBAL else scope, "by": session.name or "client",
                "cancelled": [], "closing": [], "refused": []}

    def _cancel_working(self, session: "ClientSession", account: str, result: dict,
                        keep: Callable[[BaseOrder], bool] = lambda order: False) -> None:
        for order in self.engine.router.open_orders(account):
            if keep(order):
                continue
            request = message(ClientToEngine.ORDER_CANCEL, account=account, client_order_id=order.client_order_id)
            try:  # the same path as a client's own cancel request
                self.engine._on_order_cancel(session, request)
            except MAOTradeError as exc:
                result["refused"].append({"account": account, "client_order_id": order.client_order_id,
                                          "reason": str(exc)})
            else:
                result["cancelled"].append({"account": account, "client_order_id": order.client_order_id})

    def _close_position(self, session: "ClientSession", account: str, epic: str, result: dict) -> None:
        key = new_client_order_id(FLATTEN_PREFIX)
        request = message(ClientToEngine.ORDER_CLOSE, account=account, epic=epic, client_order_id=key,
                          source=OrderSource.OPERATOR)
        try:  # the same path as a client's close request: journal, risk, route
            self.engine._on_order_close(session, request)
        except MAOTradeError as exc:
            result["refused"].append({"account": account, "epic": epic, "reason": str(exc)})
            return
        order = self.engine.router.get(account, key)
        if order is None or order.status == OrderStatus.REJECTED:
            result["refused"].append({"account": account, "epic": epic, "client_order_id": key,
                                      "reason": order.reason if order else "not journaled"})
        else:
            result["closing"].append({"account": account, "epic": epic, "client_order_id": key, "qty": order.qty})

    def _finish_action(self, session: "ClientSession", result: dict) -> None:
        scope = result["account"] or GLOBAL
        self.engine.journal.audit(scope, result["action"], {k: result[k] for k in ("by", "cancelled", "closing",
                                                                                    "refused")})
        log.warning("event=%s scope=%s cancelled=%d closing=%d refused=%d by=%s", result["action"], scope,
                    len(result["cancelled"]), len(result["closing"]), len(result["refused"]), result["by"])
        answer = message(EngineToClient.OPERATOR_ACTION, **result)
        session.put(answer)
        self.engine._emit(answer)

    def _set_kill(self, session: "ClientSession", scope: str, mode: str) -> None:
        self.risk.set_kill(scope, mode)
        self.state.save_kill(scope, mode)
        self.engine.journal.audit(scope, "kill_switch", {"mode": mode, "by": session.name})
        log.warning("event=kill_switch scope=%s mode=%s by=%s", scope, mode, session.name or "client")
        self.engine._emit(message(EngineToClient.KILL_SWITCH, account=None if scope == GLOBAL else scope, mode=mode))

    def _on_balance_history(self, session: "ClientSession", msg: dict) -> None:
        runtime = self.engine.accounts.lookup(msg)
        since = msg.get("since", 0)
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ProtocolError("balance_history_request 'since' must be epoch milliseconds (integer)")
        fills = self.engine.journal.recent_fills(runtime.account, 100)
        session.put(message(EngineToClient.BALANCE_HISTORY, account=runtime.account,
                            points=self.engine.journal.balance_history(runtime.account, since, MAX_BALANCE_POINTS),
                            fills=fills, request_id=msg.get("request_id")))


def _is_market_close(order: BaseOrder) -> bool:
    """A close executing now (not a resting stop loss, take profit or limit close)."""
    return order.action == OrderAction.CLOSE and order.order_type == OrderType.MARKET


def _view(order: BaseOrder) -> dict:
    data = order.to_dict()  # with its fills
    data["done"] = order.status in OrderStatus.DONE
    return data
