"""The engine's order path: client request -> checks -> journal -> worker; broker event -> state.

``OrderRouter`` holds no sockets. It returns what must be sent and to whom; the engine
loop does the sending. Order of operations on a new order: validate, check the account
is ready and knows the instrument, journal (durable), then dispatch. A request whose
client order id is already journaled is answered with that order's state and never
dispatched again: the client order id is the idempotency key.

The router owns every order's life. Workers report ``OrderEvent``s keyed by client order
id; ``apply_event`` is the only place a worker's word moves an engine order, through the
one state machine of ``BaseOrder``. Brackets are the router's too: a parent with stop
loss / take profit is journaled with its two legs (``child_id(parent, Leg.*)``), and the
router decides whether an amend, cancel or close is legal from its own state.
"""
from __future__ import annotations

import logging
import operator
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from engine.accounts import AccountBook
from engine.faults import failpoint
from engine.journal import Journal
from maotrade.errors import InvalidOrder, OrderRefused, ProtocolError
from maotrade.messages import EngineToWorker as ToWorker
from maotrade.protocol import to_worker
from maotrade.order import (LEG_SHAPE, BaseOrder, BracketKind, Fill, Leg, OrderAction, OrderEvent, OrderSource,
                            OrderStatus, OrderType, TimeInForce, bracket_legs, child_id, leg_name,
                            new_client_order_id, restate_legs, split_child_id)

log = logging.getLogger(__name__)

NUMERIC_FIELDS = ("qty", "price", "stop_loss", "take_profit")


NEVER_REACHED = "never reached the broker (unknown to it); not resent"
#: order requests that create an order of their own: refused, that order is REJECTED.
CREATING_REQUESTS = frozenset({ToWorker.ORDER_OPEN, ToWorker.ORDER_CLOSE})
#: the worker message of each order request kind.
ORDER_REQUEST_OF = {cls.TYPE: cls for cls in to_worker.ORDER_REQUESTS}
#: first wait before asking the broker again about an order it could not tell about
#: (doubling up to ``unknown_timeout``).
RECHECK_FIRST_S = 5.0
#: a broker's status word the engine takes from an event (fills move FILLED/PARTIALLY_FILLED).
EVENT_STATUS = {OrderEvent.SUBMITTED: OrderStatus.SUBMITTED, OrderEvent.ACCEPTED: OrderStatus.ACCEPTED,
                OrderEvent.REJECTED: OrderStatus.REJECTED, OrderEvent.CANCELLED: OrderStatus.CANCELLED,
                OrderEvent.EXPIRED: OrderStatus.EXPIRED}


#: what answers each request sent to move a bracket's legs (a refusal answers any of them).
AMEND_ANSWERS = {ToWorker.ORDER_OPEN: {OrderEvent.SUBMITTED, OrderEvent.ACCEPTED},
                 ToWorker.ORDER_CANCEL: {OrderEvent.CANCELLED},
                 ToWorker.ORDER_STOP: {OrderEvent.AMENDED}}


@dataclass
class Dispatch:
    """A request to send to an account's worker."""

    account: str
    kind: str
    order: BaseOrder

    def message(self) -> to_worker.ToWorker:
        """The request as the message the worker receives."""
        return ORDER_REQUEST_OF[self.kind](order=self.order.to_wire())


@dataclass
class OrderOutcome:
    """What a client request or a broker event produced.

    ``order`` is the order the request or event was about; ``changed`` lists every
    other order whose state moved with it (a bracket's legs), ``dispatches`` what must
    go to workers.
    """

    order: Optional[BaseOrder] = None
    dispatches: list = field(default_factory=list)
    error: str = ""
    code: str = ""
    fills: list = field(default_factory=list)
    duplicate: bool = False
    changed: list = field(default_factory=list)
    #: a bracket parent whose legs have all answered an amend: the answer to its ``order_stop``.
    amended_parent: Optional[BaseOrder] = None

    @property
    def dispatch(self) -> Optional[Dispatch]:
        """The first request to send (most outcomes have at most one)."""
        return self.dispatches[0] if self.dispatches else None

    @property
    def told_now(self) -> bool:
        """Whether the client hears of the order at once: nothing goes to the broker, or
        what goes creates the order. A cancel's or amend's answer is the broker's event."""
        return self.order is not None and (self.dispatch is None or self.dispatch.kind in CREATING_REQUESTS)


#: the fields of an order's journal row (its fills live in their own table).
_ROW_FIELDS = tuple(name for name in BaseOrder.__dataclass_fields__ if name != "fills")


#: an order's journal row as a tuple: equal tuples, equal rows.
_journal_state = operator.attrgetter(*_ROW_FIELDS)


class LiveOrders(dict):
    """Orders not yet final by (account, client order id), their bracket legs also indexed
    by (account, epic): a position that goes flat looks at its own legs, never at every
    order in flight (that walk made the router quadratic in the orders outstanding)."""

    def __init__(self):
        super().__init__()
        self._legs: dict[tuple[str, str], dict[tuple[str, str], BaseOrder]] = {}

    def __setitem__(self, key: tuple[str, str], order: BaseOrder) -> None:
        self.pop(key)
        super().__setitem__(key, order)
        if order.is_leg:
            self._legs.setdefault((order.account, order.epic), {})[key] = order

    def pop(self, key: tuple[str, str], default=None):
        order = super().pop(key, None)
        if order is None:
            return default
        if order.is_leg:
            legs = self._legs.get((order.account, order.epic), {})
            legs.pop(key, None)
            if not legs:
                self._legs.pop((order.account, order.epic), None)
        return order

    def legs_in(self, account: str, epic: str) -> list[BaseOrder]:
        """Live bracket legs of ``account`` in ``epic``, oldest first."""
        return list(self._legs.get((account, epic), {}).values())


class OrderRouter:
    """Orders of every account: creation, routing, brackets and application of broker events.

    ``accounts`` is the engine's ``AccountBook``: ``not_ready_reason(account)`` says why an
    account cannot take orders ('' when it can), ``document(account)`` is its
    configuration document and ``capabilities(account)`` what its broker declared
    (``BaseAccountManager.CAPABILITIES``).
    """

    def __init__(self, journal: Journal, accounts: AccountBook,
                 risk_check: Optional[Callable[[BaseOrder], None]] = None,
                 unknown_timeout: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.journal = journal
        self.accounts = accounts
        self._risk_check = risk_check
        self.unknown_timeout = unknown_timeout
        self._clock = clock
        self.live = LiveOrders()
        self._owners: dict[tuple[str, str], str] = {}
        # (account, id) -> monotonic deadline of orders sent and not yet answered by the broker,
        # and (when, interval) to ask the broker again about orders whose outcome it could not tell.
        self._awaiting: dict[tuple[str, str], float] = {}
        self._recheck: dict[tuple[str, str], tuple[float, float]] = {}
        self._placed_again: set[tuple[str, str]] = set()  # legs re-sent after a "not found"
        # parent (account, id) -> {leg id: request sent} for the legs whose amend the broker has
        # not answered yet, and why any failed.
        self._amending: dict[tuple[str, str], dict] = {}
        self._amend_errors: dict[tuple[str, str], list] = {}
        self.rejected_count = 0
        for order in journal.open_orders():
            self.live[(order.account, order.client_order_id)] = order

    # -- lookup ---------------------------------------------------------------------
    def get(self, account: str, client_order_id: str) -> Optional[BaseOrder]:
        """Return an order with its fills, from memory or the journal."""
        order = self.live.get((account, client_order_id))
        return order if order is not None else self.journal.get_order(account, client_order_id)

    def open_orders(self, account: str) -> list[BaseOrder]:
        """Orders of ``account`` not in a final state."""
        return [o for (a, _), o in self.live.items() if a == account and not o.is_done]

    def legs(self, parent: BaseOrder) -> list[BaseOrder]:
        """The bracket legs of ``parent`` that exist (0, 1 or 2)."""
        found = (self.get(parent.account, child_id(parent.client_order_id, leg)) for leg in Leg.ALL)
        return [leg for leg in found if leg is not None]

    def orders_to_query(self, account: str) -> list[BaseOrder]:
        """Orders the broker must be asked about after a (re)connect.

        Every active order, legs included once their parent has traded (before that a
        leg exists only as its parent's stop loss / take profit).
        """
        out = []
        for order in self.open_orders(account):
            if order.is_leg:
                parent = self.get(account, order.parent)
                if parent is None or not parent.filled_qty:
                    continue
            out.append(order)
        return out

    # -- client requests -------------------------------------------------------------------
    def open(self, request: dict, source: str, strategy: str = "") -> OrderOutcome:
        """Create, check, journal and route a new order (with its bracket legs) from a request."""
        order = self._build(request, source)
        # The journal's primary key settles duplicates below; memory answers the common case.
        existing = self.live.get((order.account, order.client_order_id))
        if existing is not None:
            return OrderOutcome(order=existing, duplicate=True)
        try:
            order.validate()
            if order.is_leg or split_child_id(order.client_order_id)[1]:
                raise InvalidOrder(f"client_order_id {order.client_order_id!r} ends like a bracket leg's "
                                   f"('/{Leg.STOP_LOSS}', '/{Leg.TAKE_PROFIT}'): choose another")
            self._check_account(order)
            if self._risk_check is not None:
                self._risk_check(order)
        except InvalidOrder as exc:
            return self._reject(order, str(exc), "invalid_order", strategy)
        except OrderRefused as exc:
            return self._reject(order, str(exc), exc.code, strategy)
        legs = self._make_legs(order) if order.action == OrderAction.OPEN else []
        failpoint("before_journal")
        if not self.journal.insert_orders([order, *legs], strategy):
            return OrderOutcome(order=self.get(order.account, order.client_order_id), duplicate=True)
        for item in (order, *legs):
            self.live[(item.account, item.client_order_id)] = item
            self._owners[(item.account, item.client_order_id)] = strategy
        failpoint("after_journal")
        log.info("event=order_journaled account=%s order=%s epic=%s qty=%g type=%s source=%s legs=%d",
                 order.account, order.client_order_id, order.epic, order.qty, order.order_type, source,
                 len(legs))
        kind = ToWorker.ORDER_CLOSE if order.action == OrderAction.CLOSE else ToWorker.ORDER_OPEN
        sent = order
        if legs and not self.accounts.capabilities(order.account).get("bracket"):
            # No native brackets: the broker gets a plain order; the legs follow its fill.
            sent = BaseOrder.from_dict({**order.to_dict(), "stop_loss": None, "take_profit": None})
        return OrderOutcome(order=order, dispatches=[self._send(sent, kind)])

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
        amount = abs(position.qty) if amount in (None, 0) else abs(float(amount))
        if amount > abs(position.qty) + 1e-9:
            raise InvalidOrder(f"close of {amount:g} {epic} exceeds the position of {abs(position.qty):g}")
        qty = -amount if position.qty > 0 else amount
        return self.open({**request, "qty": qty, "order_type": OrderType.MARKET, "action": OrderAction.CLOSE,
                          "price": None, "stop_loss": None, "take_profit": None}, source, strategy)

    def cancel(self, account: str, client_order_id: str) -> OrderOutcome:
        """Route a cancel request for a working order (a bracket leg cancels with its parent)."""
        order = self._require_active(account, client_order_id, "cancel")
        if order.is_leg:
            raise InvalidOrder(f"cannot cancel bracket leg {client_order_id} alone: cancel or amend "
                               f"its parent {order.parent}")
        self._require_capability(account, "cancel", "cancel orders")
        return OrderOutcome(order=order, dispatches=[Dispatch(account, ToWorker.ORDER_CANCEL, order)])

    def require_sendable(self, outcome: OrderOutcome) -> None:
        """Raise ``InvalidOrder`` when a request about an existing order (cancel, amend)
        would go to an account that cannot take it now; new orders are journaled and
        answered whatever the account's state."""
        first = outcome.dispatch
        if first is not None and first.kind not in CREATING_REQUESTS:
            reason = self.accounts.not_ready_reason(first.account)
            if reason:
                raise InvalidOrder(reason)

    def amend_stops(self, account: str, client_order_id: str, stop_loss, take_profit) -> OrderOutcome:
        """Route a stop loss / take profit amendment if the engine's state makes it legal.

        A working order takes new levels; a filled one protects its position through its
        legs, which must still be working: an amend of a bracket whose position is closed is
        refused, never placed. The journal changes when the broker agrees.
        """
        order = self.get(account, client_order_id)
        if order is None:
            raise InvalidOrder(f"unknown order {client_order_id} on account {account}")
        if order.is_leg:
            raise InvalidOrder(f"amend the stop loss / take profit of {order.parent}, not of its leg "
                               f"{client_order_id}")
        if stop_loss is None and take_profit is None:
            raise InvalidOrder("order_stop needs stop_loss or take_profit")
        self._require_capability(account, "stop_amend", "amend stop loss / take profit")
        amended = BaseOrder.from_dict({**order.to_dict(), "stop_loss": stop_loss, "take_profit": take_profit})
        amended.validate()
        if order.is_done:
            if not order.filled_qty:
                raise InvalidOrder(f"cannot amend order {client_order_id}: it is {order.status} with no fill")
            legs = self.legs(order)
            working = [leg for leg in legs if not leg.is_done]
            if legs and not working:
                ended = ", ".join(f"{leg_name(leg.leg)} {leg.status}" for leg in legs)
                raise InvalidOrder(f"cannot amend order {client_order_id}: its bracket is closed ({ended}); "
                                   "nothing was sent")
            if self.journal.position(account, order.epic).is_flat:
                raise InvalidOrder(f"cannot amend order {client_order_id}: no open position in {order.epic}; "
                                   "nothing was sent")
            if not self.accounts.capabilities(account).get("bracket"):
                return OrderOutcome(order=order, dispatches=self._move_legs(order, amended, working))
        return OrderOutcome(order=order, dispatches=[Dispatch(account, ToWorker.ORDER_STOP, amended)])

    def _move_legs(self, parent: BaseOrder, amended: BaseOrder, working: list[BaseOrder]) -> list[Dispatch]:
        """Amend a filled bracket whose legs are orders of their own at the broker (no native
        brackets): move, withdraw or add each leg; the parent follows as the broker confirms."""
        dispatches = []
        by_leg = {leg.leg: leg for leg in working}
        for name, (_, level_field) in LEG_SHAPE.items():
            level, leg = getattr(amended, level_field), by_leg.get(name)
            if leg is not None and level is None:
                dispatches.append(Dispatch(parent.account, ToWorker.ORDER_CANCEL, leg))
            elif leg is not None and level != leg.price:
                moved = BaseOrder.from_dict({**leg.to_dict(), "price": level})
                dispatches.append(Dispatch(parent.account, ToWorker.ORDER_STOP, moved))
            elif leg is None and level is not None:
                (made,) = self._make_legs(amended, only=name)
                made.qty = -parent.filled_qty
                self.journal.save_order(made, self.owner(parent))
                self.live[(made.account, made.client_order_id)] = made
                dispatches.append(self._send(made, ToWorker.ORDER_OPEN))
        if not dispatches:
            raise InvalidOrder(f"order {parent.client_order_id} already has those levels; nothing was sent")
        key = (parent.account, parent.client_order_id)
        self._amending[key] = {d.order.client_order_id: d.kind for d in dispatches}
        self._amend_errors[key] = []
        return dispatches

    def _leg_answered(self, leg: BaseOrder, outcome: OrderOutcome, error: str = "", event: str = "") -> None:
        """One leg answered its part of a bracket amend; the last answer answers the parent.

        Only the answer to what the amend asked counts (``event``, when given, must be the one
        that request brings): a leg still being placed when the amend came reports its
        placement too, which says nothing of the amend."""
        key = (leg.account, leg.parent)
        waiting = self._amending.get(key)
        if waiting is None or leg.client_order_id not in waiting:
            return
        if event and event not in AMEND_ANSWERS[waiting[leg.client_order_id]]:
            return
        del waiting[leg.client_order_id]
        if error:
            self._amend_errors[key].append(f"{leg_name(leg.leg)}: {error}")
        if not waiting:
            del self._amending[key]
            errors = self._amend_errors.pop(key)
            outcome.amended_parent = self.get(leg.account, leg.parent)
            outcome.error = "; ".join(errors)

    def status_query(self, order: BaseOrder) -> Dispatch:
        """Ask the broker about an order whose outcome the engine does not know."""
        return Dispatch(order.account, ToWorker.ORDER_STATUS_REQUEST, order)

    # -- broker events ---------------------------------------------------------------------
    def apply_event(self, msg: dict) -> OrderOutcome:
        """Apply one ``order_event`` from a worker; return the order as it now stands."""
        account, key, event = str(msg.get("account") or ""), msg.get("client_order_id"), msg.get("event")
        if not account or not isinstance(key, str) or not key:
            raise ProtocolError("order_event without account or client_order_id")
        if event not in OrderEvent.ALL:
            raise ProtocolError(f"order_event of unknown kind {event!r}")
        order = self.get(account, key) or self._adopt(account, key, msg)
        self._awaiting.pop((account, key), None)
        journaled = None  # the order's state as last written, when this event wrote it
        outcome = OrderOutcome(order=order)
        if msg.get("broker_ref") and not order.broker_ref:
            order.broker_ref = str(msg["broker_ref"])
        reason = str(msg.get("reason") or "")
        request = msg.get("request")
        if event == OrderEvent.REFUSED:
            outcome.error = reason or "refused by the broker"
            if request in CREATING_REQUESTS and order.can_move_to(OrderStatus.REJECTED):
                order.set_rejected(outcome.error)
            elif request == ToWorker.ORDER_CANCEL and order.is_leg and not order.is_done:
                # A leg the engine withdrew is not working there: ask what became of it.
                outcome.dispatches.append(self.status_query(order))
            if order.is_leg and request in (ToWorker.ORDER_STOP, ToWorker.ORDER_CANCEL, ToWorker.ORDER_OPEN):
                self._leg_answered(order, outcome, outcome.error)
        elif event == OrderEvent.NOT_FOUND:
            self._not_found(order, outcome)
        elif event == OrderEvent.UNKNOWN:
            if order.status in (OrderStatus.NEW, OrderStatus.SUBMITTED):
                # Never confirmed by the broker: it may or may not be there.
                order.set_status(OrderStatus.UNKNOWN, f"outcome unknown: {reason}")
                log.error("event=order_outcome_unknown account=%s order=%s reason=%s", account, key, reason)
            if not order.is_done:
                # A confirmed order keeps its state; either way the broker is asked again.
                self._ask_again((account, key))
            outcome.error = f"outcome unknown: {reason}"
        elif event == OrderEvent.AMENDED:
            self._amended(order, msg, outcome)
        else:
            fills = list(msg.get("fills") or [])
            if msg.get("fill"):
                fills.append(msg["fill"])
            if self._apply_fills(order, [Fill.from_dict(raw) for raw in fills], outcome):
                journaled = _journal_state(order)
            status = EVENT_STATUS.get(event) or (msg.get("status") if event == OrderEvent.STATUS else None)
            self._take_status(order, status, reason)
            if order.is_leg and event in (OrderEvent.SUBMITTED, OrderEvent.ACCEPTED, OrderEvent.CANCELLED):
                self._leg_answered(order, outcome, event=event)
        if msg.get("broker_ref") and not order.broker_ref:
            order.broker_ref = str(msg["broker_ref"])
        if order.is_leg and order.status == OrderStatus.FILLED:
            self._leg_filled(order, outcome)
        elif not order.is_leg and order.is_done and not order.filled_qty:
            self._parent_ended_unfilled(order, outcome)
        if outcome.fills:
            self._after_position_change(order, outcome)
        # The fills' transaction wrote the order too: write it again only if it moved since.
        self._save(order, journal=journaled != _journal_state(order))
        return outcome

    def overdue(self) -> list[BaseOrder]:
        """Orders sent more than ``unknown_timeout`` ago with no word from the broker.

        Each becomes UNKNOWN (the caller tells its owner and asks the broker again when it
        can); it is returned once.
        """
        now = self._clock()
        late = [k for k, deadline in self._awaiting.items() if now >= deadline]
        out = []
        for key in late:
            del self._awaiting[key]
            order = self.live.get(key)
            if order is None or order.is_done or order.status == OrderStatus.UNKNOWN:
                continue
            order.set_status(OrderStatus.UNKNOWN, f"no answer from the broker within {self.unknown_timeout:g}s")
            log.error("event=order_outcome_unknown account=%s order=%s reason=timeout", *key)
            self._save(order)
            self._ask_again(key)
            out.append(order)
        return out

    def due_rechecks(self) -> list[BaseOrder]:
        """Orders whose outcome the broker could not tell, due to be asked about again
        (after 5 s, then doubling up to every ``unknown_timeout``, until it settles them)."""
        now = self._clock()
        due = []
        for key, (when, interval) in list(self._recheck.items()):
            order = self.live.get(key)
            if order is None or order.is_done:
                del self._recheck[key]
            elif now >= when:
                self._ask_again(key, min(self.unknown_timeout, interval * 2))
                due.append(order)
        return due

    def _ask_again(self, key: tuple[str, str], interval: float = 0.0) -> None:
        """Schedule a status query: soon at first, then less often, at most every timeout."""
        interval = interval or min(RECHECK_FIRST_S, self.unknown_timeout)
        self._recheck[key] = (self._clock() + interval, interval)

    # -- internals: events ------------------------------------------------------------------------
    def _adopt(self, account: str, key: str, msg: dict) -> BaseOrder:
        """An event about an order the engine never journaled: journal the broker's description."""
        wire = msg.get("order")
        if not isinstance(wire, dict):
            raise ProtocolError(f"order_event for unknown order {key!r} carries no description")
        parent_id, leg = split_child_id(key)
        parent = self.get(account, parent_id) if leg else None
        source = OrderSource.BRACKET if parent is not None else OrderSource.EXTERNAL
        try:
            order = BaseOrder.from_dict({**wire, "client_order_id": key, "account": account, "fills": [],
                                         "filled_qty": 0.0, "avg_fill_price": 0.0, "status": OrderStatus.NEW,
                                         "source": source, "parent": parent_id if parent else "",
                                         "leg": leg if parent else ""})
        except TypeError as exc:
            raise ProtocolError(f"order_event for {key!r} has a malformed description: {exc}") from None
        strategy = self.owner(parent) if parent is not None else ""
        self.journal.save_order(order, strategy)
        self.live[(account, key)] = order
        if parent is None:
            log.warning("event=external_order account=%s order=%s epic=%s", account, key, order.epic)
        return order

    def _apply_fills(self, order: BaseOrder, fills: list[Fill], outcome: OrderOutcome) -> bool:
        """Journal new fills with the position and the order; True if the journal was written."""
        if not fills:
            return False
        failpoint("before_fill_apply")
        # Fills, position and order state commit together: never a fill without its order.
        # The journal's key on (account, exec_id) is the one duplicate check on this side.
        applied = self.journal.apply_fills(order, fills, external=order.source == OrderSource.EXTERNAL,
                                           apply=order.add_fill)
        failpoint("after_fill_apply")
        outcome.fills = [fill.to_dict() for fill, _ in applied]
        return True

    @staticmethod
    def _take_status(order: BaseOrder, status: Optional[str], reason: str) -> None:
        # FILLED and PARTIALLY_FILLED follow from fills alone; a late or repeated word is stale.
        if not status or status == order.status or status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            return
        if status == OrderStatus.NEW:
            return
        if order.can_move_to(status):
            order.set_status(status, reason)
        else:
            log.info("event=stale_status_ignored account=%s order=%s have=%s got=%s",
                     order.account, order.client_order_id, order.status, status)

    def _not_found(self, order: BaseOrder, outcome: OrderOutcome) -> None:
        if order.is_done:
            return
        if order.is_leg and not self.accounts.capabilities(order.account).get("bracket") \
                and not order.filled_qty and not self.journal.position(order.account, order.epic).is_flat:
            key = (order.account, order.client_order_id)
            if key in self._placed_again and order.status == OrderStatus.NEW:
                # Placed again and still unknown to the broker, never confirmed in between:
                # placing it once more would only repeat the loop. Say so and keep asking.
                log.error("event=leg_unplaceable account=%s order=%s: the position may be unprotected",
                          order.account, order.client_order_id)
                order.set_status(OrderStatus.UNKNOWN, "the broker has no record of this leg, placed again "
                                                      "once: the position may be unprotected")
                self._ask_again(key)
                return
            # A leg the engine places itself that the broker never got (its request was lost
            # with a worker): the broker has no such id, so placing it now cannot duplicate it.
            log.warning("event=leg_placed_again account=%s order=%s", order.account, order.client_order_id)
            self._placed_again.add(key)
            outcome.dispatches.append(self._send(order, ToWorker.ORDER_OPEN))
        elif order.is_leg and self.accounts.capabilities(order.account).get("bracket") == BracketKind.ATTACHED \
                and not self.journal.position(order.account, order.epic).is_flat:
            # A level on the broker's position, gone while our position is open: it may have
            # just fired (its fill still on the way), or been removed at the broker.
            # Cancelling it would lose that fill; ask again instead (the position going flat
            # ends it, see _after_position_change).
            if order.status != OrderStatus.UNKNOWN:
                order.set_status(OrderStatus.UNKNOWN, "the broker no longer shows this leg while the position is "
                                                      "open: it may have fired, or been removed there")
                log.warning("event=leg_missing account=%s order=%s", order.account, order.client_order_id)
            key = (order.account, order.client_order_id)
            if key not in self._recheck:  # an answer to a recheck keeps the recheck's longer wait
                self._ask_again(key)
        elif order.is_leg:
            order.set_cancelled("not working at the broker")
        elif not order.filled_qty:
            order.set_rejected(NEVER_REACHED)
        elif order.status != OrderStatus.UNKNOWN:
            order.set_status(OrderStatus.UNKNOWN, "the broker has no record of an order that traded")
            self._ask_again((order.account, order.client_order_id))

    def _amended(self, order: BaseOrder, msg: dict, outcome: OrderOutcome) -> None:
        order.updated = int(time.time() * 1000)
        if order.is_leg:
            # A leg that is an order of its own moved: its parent's level moves with it.
            order.price = msg.get("price")
            parent = self.get(order.account, order.parent)
            if parent is not None:
                setattr(parent, LEG_SHAPE[order.leg][1], order.price)
                self._save(parent)
            self._leg_answered(order, outcome, event=OrderEvent.AMENDED)
            return
        order.stop_loss, order.take_profit = msg.get("stop_loss"), msg.get("take_profit")
        if msg.get("price") is not None and order.order_type != OrderType.MARKET:
            order.price = msg["price"]
        new, changed = restate_legs(order, {leg.leg: leg for leg in self.legs(order)})
        for leg in new:
            self.journal.save_order(leg, self.owner(order))
            self.live[(leg.account, leg.client_order_id)] = leg
        for leg in changed:
            self._save(leg)
        outcome.changed += new + changed

    def _leg_filled(self, leg: BaseOrder, outcome: OrderOutcome) -> None:
        """One leg closed the position: the other is done too (the broker cancels it as well)."""
        parent = self.get(leg.account, leg.parent)
        if parent is None:
            return
        native = self.accounts.capabilities(leg.account).get("bracket")
        for sibling in self.legs(parent):
            if sibling.client_order_id == leg.client_order_id or sibling.is_done:
                continue
            if native:
                sibling.set_cancelled(f"{leg_name(leg.leg)} filled")
                self._save(sibling)
                outcome.changed.append(sibling)
            else:
                # A working order of its own at the broker: it ends when the broker says so.
                outcome.dispatches.append(Dispatch(leg.account, ToWorker.ORDER_CANCEL, sibling))

    def _parent_ended_unfilled(self, parent: BaseOrder, outcome: OrderOutcome) -> None:
        """A parent that ended with no fill (cancelled, rejected, expired) takes its legs with it."""
        for leg in self.legs(parent):
            if not leg.is_done:
                leg.set_cancelled(f"parent {parent.status.lower()}")
                self._save(leg)
                outcome.changed.append(leg)

    def _after_position_change(self, order: BaseOrder, outcome: OrderOutcome) -> None:
        """Legs never outlive their position: when it is flat, working legs in it end."""
        if not self.journal.position(order.account, order.epic).is_flat:
            if not order.is_leg and order.is_done and not self.accounts.capabilities(order.account).get("bracket"):
                # No native brackets: the engine places the legs once the parent has traded.
                for leg in self.legs(order):
                    if leg.status == OrderStatus.NEW:
                        leg.qty = -order.filled_qty
                        self._save(leg)
                        outcome.dispatches.append(self._send(leg, ToWorker.ORDER_OPEN))
            return
        attached = self.accounts.capabilities(order.account).get("bracket") == BracketKind.ATTACHED
        account = order.account
        for other in self.live.legs_in(account, order.epic):
            if other.is_done:
                continue
            if attached or not self._leg_placed(other):
                # Never placed, or a level attached to the position, which went with it.
                other.set_cancelled("position closed")
                self._save(other)
                outcome.changed.append(other)
            elif not any(d.order is other for d in outcome.dispatches):
                # A leg that is an order of its own at the broker is withdrawn there first.
                outcome.dispatches.append(Dispatch(account, ToWorker.ORDER_CANCEL, other))

    def _leg_placed(self, leg: BaseOrder) -> bool:
        """True if ``leg`` may be working at the broker as an order of its own.

        Where the engine places the legs, it sends them once the parent has traded and is
        done: before that a leg exists only in the journal (even if NEW since, it was sent)."""
        if self.accounts.capabilities(leg.account).get("bracket") or leg.status != OrderStatus.NEW:
            return True
        parent = self.get(leg.account, leg.parent)
        return parent is not None and parent.is_done and bool(parent.filled_qty)

    # -- internals: requests ------------------------------------------------------------------------
    def _send(self, order: BaseOrder, kind: str) -> Dispatch:
        self._awaiting[(order.account, order.client_order_id)] = self._clock() + self.unknown_timeout
        return Dispatch(order.account, kind, order)

    @staticmethod
    def _make_legs(parent: BaseOrder, only: str = "") -> list[BaseOrder]:
        return bracket_legs(parent, only)

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
        reason = self.accounts.not_ready_reason(order.account)
        if reason:
            raise OrderRefused("account_not_ready", reason)
        order.epicBroker = self.accounts[order.account].broker_epic(order.epic)
        allowed = self.accounts.capabilities(order.account).get("order_types")
        if allowed and order.order_type not in allowed:
            raise OrderRefused("unsupported_order_type", f"broker {doc.get('brokerName')} does not take "
                                                         f"{order.order_type} orders")

    def _require_capability(self, account: str, name: str, what: str) -> None:
        capabilities = self.accounts.capabilities(account)
        if capabilities and not capabilities.get(name):
            raise InvalidOrder(f"broker {self.accounts.document(account).get('brokerName')} cannot {what}")

    def _reject(self, order: BaseOrder, reason: str, code: str, strategy: str) -> OrderOutcome:
        order.set_rejected(reason)
        if order.account and order.client_order_id and not self.journal.insert_orders([order], strategy):
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

    def _save(self, order: BaseOrder, journal: bool = True) -> None:
        if journal:
            self.journal.save_order(order)
        key = (order.account, order.client_order_id)
        if order.is_done:
            self.live.pop(key, None)
            self._awaiting.pop(key, None)
            self._recheck.pop(key, None)
        else:
            self.live[key] = order

    def owner(self, order: BaseOrder) -> str:
        """Name of the client that placed ``order`` (a leg's is its parent's; '' if none)."""
        key = (order.account, order.client_order_id)
        name = self._owners.get(key)
        if name is None:
            name = self._owners[key] = self.journal.order_strategy(order.account, order.client_order_id)
        if order.is_done:
            self._owners.pop(key, None)
        return name
