"""The engine's order path: client request -> checks -> journal -> worker; worker answer -> state.

``OrderRouter`` holds no sockets. It returns what must be sent and to whom; the engine
loop does the sending. Order of operations on a new order: validate, check the account
is ready and knows the instrument, journal (durable), then dispatch. A request whose
client order id is already journaled is answered with that order's state and never
dispatched again: the client order id is the idempotency key.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

from engine.faults import failpoint
from engine.journal import Journal
from maotrade.errors import InvalidOrder, OrderRefused
from maotrade.messages import EngineToWorker as ToWorker
from maotrade.order import (BaseOrder, Fill, OrderAction, OrderStatus, OrderType, TimeInForce,
                            new_client_order_id)

log = logging.getLogger(__name__)

NUMERIC_FIELDS = ("qty", "price", "stop_loss", "take_profit")


@dataclass
class Dispatch:
    """A request to send to an account's worker."""

    account: str
    kind: str
    order: BaseOrder


@dataclass
class OrderOutcome:
    """What a client request or worker answer produced."""

    order: Optional[BaseOrder] = None
    dispatch: Optional[Dispatch] = None
    error: str = ""
    code: str = ""
    fills: list = field(default_factory=list)
    duplicate: bool = False


class OrderRouter:
    """Orders of every account: creation, routing and application of broker answers."""

    def __init__(self, journal: Journal, is_ready: Callable[[str], str], account_doc: Callable[[str], dict],
                 risk_check: Optional[Callable[[BaseOrder], None]] = None):
        self.journal = journal
        self._not_ready_reason = is_ready
        self._doc = account_doc
        self._risk_check = risk_check
        self.live: dict[tuple[str, str], BaseOrder] = {}
        self._owners: dict[tuple[str, str], str] = {}
        self.rejected_count = 0
        for order in journal.open_orders():
            self._load_fills(order)
            self.live[(order.account, order.client_order_id)] = order

    # -- lookup ---------------------------------------------------------------------
    def get(self, account: str, client_order_id: str) -> Optional[BaseOrder]:
        """Return an order with its fills, from memory or the journal."""
        order = self.live.get((account, client_order_id))
        if order is None:
            order = self.journal.get_order(account, client_order_id)
            if order is not None:
                self._load_fills(order)
        return order

    def open_orders(self, account: str) -> list[BaseOrder]:
        """Orders of ``account`` not in a final state."""
        return [o for (a, _), o in self.live.items() if a == account and not o.is_done]

    def _load_fills(self, order: BaseOrder) -> None:
        order.fills = [{"exec_id": f["exec_id"], "qty": abs(f["qty"]), "price": f["price"],
                        "time": f["time"], "commission": f["commission"]}
                       for f in self.journal.fills(order.account, order.client_order_id)]

    # -- client requests -------------------------------------------------------------------
    def open(self, request: dict, source: str, strategy: str = "") -> OrderOutcome:
        """Create, check, journal and route a new order from a client request."""
        order = self._build(request, source)
        # The journal's primary key settles duplicates below; memory answers the common case.
        existing = self.live.get((order.account, order.client_order_id))
        if existing is not None:
            return OrderOutcome(order=existing, duplicate=True)
        try:
            order.validate()
            self._check_account(order)
            if self._risk_check is not None:
                self._risk_check(order)
        except InvalidOrder as exc:
            return self._reject(order, str(exc), "invalid_order", strategy)
        except OrderRefused as exc:
            return self._reject(order, str(exc), exc.code, strategy)
        failpoint("before_journal")
        if not self.journal.insert_order(order, strategy):
            return OrderOutcome(order=self.get(order.account, order.client_order_id), duplicate=True)
        self.live[(order.account, order.client_order_id)] = order
        self._owners[(order.account, order.client_order_id)] = strategy
        failpoint("after_journal")
        log.info("event=order_journaled account=%s order=%s epic=%s qty=%g type=%s source=%s",
                 order.account, order.client_order_id, order.epic, order.qty, order.order_type, source)
        return OrderOutcome(order=order, dispatch=Dispatch(order.account, ToWorker.ORDER_OPEN, order))

    def close(self, request: dict, source: str, strategy: str = "") -> OrderOutcome:
        """Close all (no ``qty``) or part (``qty`` > 0, the amount) of a position at market."""
        account, epic = str(request.get("account", "")), request.get("epic")
        if not isinstance(epic, str) or not epic:
            raise InvalidOrder("order_close needs 'epic' (a MAOTrade instrument code)")
        amount = request.get("qty")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, (int, float))):
            raise InvalidOrder(f"order_close qty must be a number, got {amount!r}")
        position = self.journal.position(account, epic)
        if position.is_flat:
            raise InvalidOrder(f"no open position in {epic} on account {account} to close")
        amount = request.get("qty")
        amount = abs(position.qty) if amount in (None, 0) else abs(float(amount))
        if amount > abs(position.qty) + 1e-9:
            raise InvalidOrder(f"close of {amount:g} {epic} exceeds the position of {abs(position.qty):g}")
        qty = -amount if position.qty > 0 else amount
        outcome = self.open({**request, "qty": qty, "order_type": OrderType.MARKET,
                             "action": OrderAction.CLOSE, "price": None}, source, strategy)
        if outcome.dispatch is not None:
            outcome.dispatch.kind = ToWorker.ORDER_CLOSE
        return outcome

    def cancel(self, account: str, client_order_id: str) -> OrderOutcome:
        """Route a cancel request for a working order."""
        order = self._require_active(account, client_order_id, "cancel")
        return OrderOutcome(order=order, dispatch=Dispatch(account, ToWorker.ORDER_CANCEL, order))

    def amend_stops(self, account: str, client_order_id: str, stop_loss, take_profit) -> OrderOutcome:
        """Route a stop loss / take profit amendment; the journal changes when the broker agrees."""
        order = self.get(account, client_order_id)
        if order is None:
            raise InvalidOrder(f"unknown order {client_order_id} on account {account}")
        amended = BaseOrder.from_dict({**order.to_dict(), "stop_loss": stop_loss, "take_profit": take_profit})
        amended.fills = order.fills
        for name in ("stop_loss", "take_profit"):
            value = getattr(amended, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise InvalidOrder(f"order {client_order_id}: {name} must be a positive number")
        return OrderOutcome(order=order, dispatch=Dispatch(account, ToWorker.ORDER_STOP, amended))

    def status_query(self, order: BaseOrder) -> Dispatch:
        """Ask the broker about an order whose outcome the engine does not know."""
        return Dispatch(order.account, ToWorker.ORDER_STATUS_REQUEST, order)

    # -- worker answers ---------------------------------------------------------------------
    def apply_response(self, msg: dict) -> OrderOutcome:
        """Apply an ``order_response`` from a worker; return the order as it now stands."""
        wire = msg.get("order") or {}
        account = str(msg.get("account") or wire.get("account") or "")
        key = wire.get("client_order_id")
        if not account or not key:
            raise InvalidOrder("order_response without account or client_order_id")
        order = self.get(account, key)
        if order is None:
            order = BaseOrder.from_dict({**wire, "fills": [], "filled_qty": 0.0, "avg_fill_price": 0.0,
                                         "status": OrderStatus.NEW, "account": account,
                                         "source": wire.get("source") or "external"})
            self.journal.save_order(order)
            if order.source == "broker":
                # The broker closed a position on its own (a stop loss / take profit it held).
                log.info("event=broker_close account=%s order=%s epic=%s reason=%r", account, key, order.epic,
                         order.reason)
            else:
                log.warning("event=external_order account=%s order=%s epic=%s", account, key, order.epic)
        outcome = OrderOutcome(order=order)
        request = msg.get("request")
        if msg.get("refused"):
            outcome.error = str(msg["refused"])
            if request in (ToWorker.ORDER_OPEN, ToWorker.ORDER_CLOSE) and order.can_move_to(OrderStatus.REJECTED):
                order.set_rejected(outcome.error)
            self._save(order)
            return outcome
        if msg.get("not_found"):
            if order.status == OrderStatus.NEW:
                order.set_rejected("never reached the broker (unknown to it after a restart); not resent")
                self._save(order)
            return outcome
        if msg.get("unknown"):
            outcome.error = f"outcome unknown: {msg['unknown']}"
            log.error("event=order_outcome_unknown account=%s order=%s reason=%s", account, key, msg["unknown"])
            return outcome
        fills = list(msg.get("fills") or [])
        if msg.get("fill"):
            fills.append(msg["fill"])
        new_fills = []
        for raw in fills:
            fill = Fill(exec_id=str(raw["exec_id"]), qty=abs(float(raw["qty"])), price=float(raw["price"]),
                        time=int(raw.get("time") or 0), commission=float(raw.get("commission") or 0.0))
            if any(f["exec_id"] == fill.exec_id for f in order.fills):
                continue
            order.add_fill(fill)
            new_fills.append(fill)
        if request == ToWorker.ORDER_STOP:
            order.stop_loss, order.take_profit = wire.get("stop_loss"), wire.get("take_profit")
        status = wire.get("status")
        if status and status != order.status and order.can_move_to(status) and not (
                status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED) and not fills):
            order.set_status(status, wire.get("reason") or "")
        elif status and status != order.status and status not in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            log.info("event=stale_status_ignored account=%s order=%s have=%s got=%s",
                     account, key, order.status, status)
        if wire.get("broker_ref"):
            order.broker_ref = str(wire["broker_ref"])
        if new_fills:
            failpoint("before_fill_apply")
            # Fills, position and order state commit together: never a fill without its order.
            applied = self.journal.apply_fills(order, new_fills, external=order.source == "external")
            failpoint("after_fill_apply")
            outcome.fills = [fill.to_dict() for fill, _ in applied]
            self._forget_if_done(order)
        else:
            self._save(order)
        return outcome

    # -- internals ------------------------------------------------------------------------------
    def _build(self, request: dict, source: str) -> BaseOrder:
        account = request.get("account")
        if account in (None, ""):
            raise InvalidOrder("order needs 'account'")
        for name in NUMERIC_FIELDS:
            value = request.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise InvalidOrder(f"order field {name} must be a number, got {value!r}")
        epic = request.get("epic")
        if not isinstance(epic, str) or not epic:
            raise InvalidOrder("order needs 'epic' (a MAOTrade instrument code)")
        key = request.get("client_order_id") or new_client_order_id()
        if not isinstance(key, str):
            raise InvalidOrder("client_order_id must be a string")
        return BaseOrder(client_order_id=key, account=str(account), epic=epic,
                         qty=request.get("qty") or 0, order_type=str(request.get("order_type") or OrderType.MARKET).upper(),
                         action=request.get("action") or OrderAction.OPEN, price=request.get("price"),
                         stop_loss=request.get("stop_loss"), take_profit=request.get("take_profit"),
                         time_in_force=str(request.get("time_in_force") or TimeInForce.GTC).upper(),
                         source=source)

    def _check_account(self, order: BaseOrder) -> None:
        reason = self._not_ready_reason(order.account)
        if reason:
            raise OrderRefused("account_not_ready", reason)
        doc = self._doc(order.account)
        mapping = doc.get("epicMapping") or {}
        if mapping:
            if order.epic not in mapping:
                raise OrderRefused("unknown_instrument", f"unknown instrument {order.epic!r} for account "
                                                         f"{order.account} (not in its epic mapping)")
            order.epicBroker = mapping[order.epic]
        else:
            order.epicBroker = order.epic
        capabilities = doc.get("capabilities") or {}
        allowed = capabilities.get("order_types")
        if allowed and order.order_type not in allowed:
            raise OrderRefused("unsupported_order_type", f"broker {doc.get('brokerName')} does not take "
                                                         f"{order.order_type} orders")

    def _reject(self, order: BaseOrder, reason: str, code: str, strategy: str) -> OrderOutcome:
        order.status = OrderStatus.REJECTED
        order.reason = reason
        if order.account and order.client_order_id and not self.journal.insert_order(order, strategy):
            # The id is journaled already: whatever this request holds, that order is the answer.
            existing = self.get(order.account, order.client_order_id)
            if existing is not None:
                return OrderOutcome(order=existing, duplicate=True)
        self.rejected_count += 1
        log.warning("event=order_refused account=%s order=%s code=%s reason=%s",
                    order.account, order.client_order_id, code, reason)
        return OrderOutcome(order=order, error=reason, code=code)

    def _require_active(self, account: str, client_order_id: str, what: str) -> BaseOrder:
        order = self.get(account, client_order_id)
        if order is None:
            raise InvalidOrder(f"unknown order {client_order_id} on account {account}")
        if order.is_done:
            raise InvalidOrder(f"cannot {what} order {client_order_id}: it is {order.status}")
        return order

    def _save(self, order: BaseOrder) -> None:
        self.journal.save_order(order)
        self._forget_if_done(order)

    def _forget_if_done(self, order: BaseOrder) -> None:
        key = (order.account, order.client_order_id)
        if order.is_done:
            self.live.pop(key, None)
        else:
            self.live[key] = order

    def owner(self, order: BaseOrder) -> str:
        """Name of the client that placed ``order`` ('' if none)."""
        key = (order.account, order.client_order_id)
        name = self._owners.get(key)
        if name is None:
            name = self._owners[key] = self.journal.order_strategy(order.account, order.client_order_id)
        if order.is_done:
            self._owners.pop(key, None)
        return name
