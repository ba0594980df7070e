"""Orders: the fields every broker shares and the one state machine they move through.

A ``BaseOrder`` is created by the engine (never by a broker), journaled, and then
travels to an Account Manager as a plain dict (``to_dict``). The engine's copy is the
only one that counts: its transitions are checked against ``ALLOWED_TRANSITIONS`` and an
illegal one raises ``IllegalTransition`` and changes nothing. An Account Manager works
on a ``BrokerOrder`` (the broker's view of the same order): its ``set_*`` methods record
what the broker said, and the base class turns each call into an ``OrderEvent`` that the
engine applies to its own order.

A parent order with a stop loss or take profit is a bracket: the engine journals two
child orders (legs) beside it, named by ``child_id(parent, Leg.STOP_LOSS)`` and
``child_id(parent, Leg.TAKE_PROFIT)``, the same rule for every broker.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from maotrade.errors import IllegalTransition, InvalidOrder
from maotrade.protocol.base import FillData, OrderData


class OrderStatus:
    """Order states as constants, with the sets the engine reasons about."""

    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    #: the request may or may not have reached the broker; settled by asking it, never by resending.
    UNKNOWN = "UNKNOWN"

    ALL = frozenset({NEW, SUBMITTED, ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED, EXPIRED,
                     UNKNOWN})
    DONE = frozenset({FILLED, CANCELLED, REJECTED, EXPIRED})
    ACTIVE = ALL - DONE


class OrderType:
    """Order types every Account Manager understands."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"

    ALL = frozenset({MARKET, LIMIT, STOP})


class OrderAction:
    """What an order does to a position: open (or add to) one, or reduce/close it."""

    OPEN = "open"
    CLOSE = "close"

    ALL = frozenset({OPEN, CLOSE})


class TimeInForce:
    """Time in force values; brokers map them onto their own codes."""

    GTC = "GTC"
    DAY = "DAY"
    IOC = "IOC"
    FOK = "FOK"

    ALL = frozenset({GTC, DAY, IOC, FOK})


class Leg:
    """The legs of a bracket: the suffix of each child order's id."""

    STOP_LOSS = "SL"
    TAKE_PROFIT = "TP"

    ALL = (STOP_LOSS, TAKE_PROFIT)


def child_id(parent_id: str, leg: str) -> str:
    """Return the client order id of ``parent_id``'s bracket leg ``leg`` (``Leg.*``)."""
    return f"{parent_id}/{leg}"


def split_child_id(client_order_id: str) -> tuple[str, str]:
    """Return ``(parent_id, leg)`` for a leg's id, ``(client_order_id, "")`` for any other."""
    parent, _, leg = client_order_id.rpartition("/")
    return (parent, leg) if parent and leg in Leg.ALL else (client_order_id, "")


class BracketKind:
    """How a broker keeps a bracket (its ``bracket`` capability; absent or False: the engine
    places the legs as orders of their own once the parent has traded)."""

    #: levels attached to the position, which vanish with it (paper, IG).
    ATTACHED = "attached"
    #: child orders at the broker, cancelled one by the other (IB's OCA group).
    ORDERS = "orders"


class OrderSource:
    """Who asked for an order."""

    STRATEGY = "strategy"
    API = "api"
    WEBHOOK = "webhook"
    OPERATOR = "operator"
    MANUAL = "manual"
    #: a bracket leg the engine made from its parent's stop loss / take profit.
    BRACKET = "bracket"
    #: reported by the broker, placed by nobody the engine knows.
    EXTERNAL = "external"

    #: sources a client may claim for its own requests.
    CLIENT = frozenset({STRATEGY, API, WEBHOOK, OPERATOR, MANUAL})


_S = OrderStatus
# A state may always be re-reported as itself (brokers repeat themselves); that is
# handled in ``_move`` rather than listed here.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    _S.NEW: frozenset({_S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.REJECTED,
                       _S.CANCELLED, _S.EXPIRED, _S.UNKNOWN}),
    _S.SUBMITTED: frozenset({_S.ACCEPTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.REJECTED,
                             _S.CANCELLED, _S.EXPIRED, _S.UNKNOWN}),
    _S.ACCEPTED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.EXPIRED, _S.UNKNOWN}),
    _S.PARTIALLY_FILLED: frozenset({_S.FILLED, _S.CANCELLED, _S.EXPIRED, _S.UNKNOWN}),
    _S.UNKNOWN: frozenset({_S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.REJECTED,
                           _S.CANCELLED, _S.EXPIRED}),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
}

_INF = float("inf")

_id_counter = itertools.count(1)
# The base36 of this process's id and of the latest millisecond, kept between calls (a
# backtest makes tens of thousands of ids); the pid is forgotten in a forked child.
_id_parts = {"pid": "", "ms": -1, "ms36": ""}


def _forget_pid() -> None:
    _id_parts["pid"] = ""


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pid)


def new_client_order_id(prefix: str = "mt") -> str:
    """Return a fresh client order id, unique across processes and restarts.

    The id is ``{prefix}-{ms timestamp base36}{pid base36}{counter}``: short enough for
    every broker we know (IG dealReference <= 30, FIX ClOrdID, IB orderRef).
    """
    parts = _id_parts
    ms = int(time.time() * 1000)
    if ms != parts["ms"]:
        parts["ms"], parts["ms36"] = ms, _base36(ms)
    if not parts["pid"]:
        parts["pid"] = _base36(os.getpid())
    return f"{prefix}-{parts['ms36']}{parts['pid']}{_base36(next(_id_counter))}"[:30]


_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"
#: every two-digit base36 string, "00" to "zz": the conversion takes two digits per step.
_PAIRS36 = tuple(a + b for a in _DIGITS36 for b in _DIGITS36)


def _base36(value: int) -> str:
    if value < 36:
        return _DIGITS36[value]
    out = ""
    while value >= 1296:
        value, rem = divmod(value, 1296)
        out = _PAIRS36[rem] + out
    return (_PAIRS36[value] if value >= 36 else _DIGITS36[value]) + out


@dataclass
class Fill:
    """One execution reported by a broker; ``exec_id`` makes it unique."""

    exec_id: str
    qty: float
    price: float
    time: int
    commission: float = 0.0

    def to_dict(self) -> dict:
        """Return the fill as a wire dict."""
        return {"exec_id": self.exec_id, "qty": self.qty, "price": self.price, "time": self.time,
                "commission": self.commission}

    def to_wire(self) -> FillData:
        """Return the fill as the protocol struct (types made exact, as a broker may not)."""
        return FillData(exec_id=str(self.exec_id), qty=float(self.qty), price=float(self.price),
                        time=int(self.time or 0), commission=float(self.commission or 0.0))

    @classmethod
    def from_dict(cls, data: dict) -> "Fill":
        """Build a fill from its wire dict; ``InvalidOrder`` names what is missing or wrong."""
        try:
            fill = cls(exec_id=str(data["exec_id"]), qty=abs(float(data["qty"])), price=float(data["price"]),
                       time=int(data.get("time") or 0), commission=float(data.get("commission") or 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidOrder(f"malformed fill {data!r:.120}: {type(exc).__name__} {exc}") from None
        if not fill.exec_id or not (fill.qty > 0 and fill.price > 0) or fill.price == float("inf"):
            raise InvalidOrder(f"fill {fill.exec_id!r} needs a positive finite qty and price")
        return fill


@dataclass
class BaseOrder:
    """An order as the engine journals it and every Account Manager receives it.

    ``qty`` is signed: positive buys, negative sells. ``epic`` is the MAOTrade
    instrument code, ``epicBroker`` the broker's own (from the account's epic mapping).
    Wire names keep the specification's spelling (``epicBroker``).
    """

    client_order_id: str
    account: str
    epic: str
    qty: float
    epicBroker: str = ""
    order_type: str = OrderType.MARKET
    action: str = OrderAction.OPEN
    price: Optional[float] = None
    stop_loss: Optional[float] = None
    take_profit: Optional[float] = None
    time_in_force: str = TimeInForce.GTC
    source: str = OrderSource.STRATEGY
    #: for a bracket leg: its parent's client order id and which leg it is (``Leg.*``).
    parent: str = ""
    leg: str = ""
    status: str = OrderStatus.NEW
    broker_ref: str = ""
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    reason: str = ""
    created: int = 0
    updated: int = 0
    fills: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.created:
            self.created = int(time.time() * 1000)
        if not self.updated:
            self.updated = self.created

    # -- validation --------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``InvalidOrder`` naming the first field that makes this order illegal."""
        key, qty = self.client_order_id, self.qty
        if not key or not isinstance(key, str) or len(key) > 64:
            raise InvalidOrder("client_order_id must be a non-empty string of at most 64 characters")
        if not self.epic:
            raise InvalidOrder(f"order {key}: epic is empty")
        if not isinstance(qty, (int, float)) or qty != qty or qty == 0:
            raise InvalidOrder(f"order {key}: qty must be a non-zero number, got {qty!r}")
        if qty == _INF or qty == -_INF:
            raise InvalidOrder(f"order {key}: qty must be finite")
        if self.order_type not in OrderType.ALL:
            raise InvalidOrder(f"order {key}: unknown order_type {self.order_type!r}")
        if self.action not in OrderAction.ALL:
            raise InvalidOrder(f"order {key}: unknown action {self.action!r}")
        if self.time_in_force not in TimeInForce.ALL:
            raise InvalidOrder(f"order {key}: unknown time_in_force {self.time_in_force!r}")
        price, stop_loss, take_profit = self.price, self.stop_loss, self.take_profit
        if self.order_type != OrderType.MARKET and (price is None or not price > 0):
            raise InvalidOrder(f"order {key}: {self.order_type} order needs a positive price")
        for name, value in (("price", price), ("stop_loss", stop_loss), ("take_profit", take_profit)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0 and value != _INF):
                raise InvalidOrder(f"order {key}: {name} must be a positive number, got {value!r}")
        if stop_loss is not None and take_profit is not None:
            if qty > 0 and not stop_loss < take_profit:
                raise InvalidOrder(f"order {key}: a buy needs stop_loss below take_profit")
            if qty < 0 and not stop_loss > take_profit:
                raise InvalidOrder(f"order {key}: a sell needs stop_loss above take_profit")

    # -- state machine -----------------------------------------------------------
    @property
    def is_done(self) -> bool:
        """True once the order can change no more."""
        return self.status in OrderStatus.DONE

    @property
    def remaining_qty(self) -> float:
        """Signed quantity still to fill."""
        return self.qty - self.filled_qty

    def can_move_to(self, status: str) -> bool:
        """Return True if moving to ``status`` is legal (or a repeat of the current state)."""
        return status == self.status or status in ALLOWED_TRANSITIONS.get(self.status, ())

    def _move(self, status: str, reason: str = "") -> None:
        if not self.can_move_to(status):
            if status not in OrderStatus.ALL:
                raise IllegalTransition(f"order {self.client_order_id}: unknown status {status!r}")
            raise IllegalTransition(
                f"order {self.client_order_id}: illegal transition {self.status} -> {status}")
        self.status = status
        if reason:
            self.reason = reason
        self.updated = int(time.time() * 1000)

    def set_status(self, status: str, reason: str = "") -> None:
        """Move to ``status`` if the state machine allows it; raise ``IllegalTransition`` if not."""
        self._move(status, reason)

    def set_submitted(self, broker_ref: str = "") -> None:
        """Mark the order as handed to the broker, with the broker's reference if known."""
        if broker_ref:
            self.broker_ref = str(broker_ref)
        self._move(OrderStatus.SUBMITTED)

    def set_accepted(self, broker_ref: str = "") -> None:
        """Mark the order as acknowledged by the broker (working, not yet filled)."""
        if broker_ref:
            self.broker_ref = str(broker_ref)
        self._move(OrderStatus.ACCEPTED)

    def set_rejected(self, reason: str) -> None:
        """Mark the order as refused, keeping the broker's (or engine's) reason."""
        self._move(OrderStatus.REJECTED, reason or "rejected")

    def set_cancelled(self, reason: str = "") -> None:
        """Mark the order as cancelled."""
        self._move(OrderStatus.CANCELLED, reason)

    def set_expired(self, reason: str = "") -> None:
        """Mark the order as expired (time in force ran out)."""
        self._move(OrderStatus.EXPIRED, reason)

    @property
    def is_leg(self) -> bool:
        """True for a bracket leg (a child of another order)."""
        return bool(self.parent)

    def check_fill(self, fill: Fill) -> None:
        """Raise ``InvalidOrder`` if ``fill`` cannot belong to this order (no size, overfill)."""
        size = abs(fill.qty)
        if size <= 0:
            raise InvalidOrder(f"order {self.client_order_id}: fill {fill.exec_id} has no quantity")
        remaining = abs(self.qty) - abs(self.filled_qty)
        if size > remaining + 1e-9:
            raise InvalidOrder(f"order {self.client_order_id}: fill {fill.exec_id} of {size} "
                               f"exceeds the remaining {remaining}")

    def add_fill(self, fill: Fill) -> bool:
        """Apply one new execution (the caller has checked that its ``exec_id`` is new).

        ``fill.qty`` is unsigned; its sign follows the order's side. The status becomes
        FILLED when the whole quantity has traded, PARTIALLY_FILLED before that.
        """
        size = abs(fill.qty)
        done, qty = abs(self.filled_qty), self.qty
        remaining = abs(qty) - done
        if size <= 0 or size > remaining + 1e-9:
            self.check_fill(fill)  # says which
        self._move(OrderStatus.FILLED if size >= remaining - 1e-9 else OrderStatus.PARTIALLY_FILLED)
        self.avg_fill_price = (self.avg_fill_price * done + fill.price * size) / (done + size)
        self.filled_qty = done + size if qty > 0 else -(done + size)
        self.fills.append(fill.to_dict())
        return True

    # -- wire --------------------------------------------------------------------
    def to_dict(self, with_fills: bool = True) -> dict[str, Any]:
        """Return the order as the dict that travels on the bus (fills optional)."""
        data = self.__dict__.copy()
        if len(data) == _FIELD_COUNT:
            del data["fills"]
        else:  # attributes set beyond the fields: keep only the fields
            data = {name: data[name] for name in _WIRE_FIELDS}
        if with_fills:
            data["fills"] = [dict(f) for f in self.fills]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BaseOrder":
        """Build an order from a wire dict, ignoring keys this version does not know."""
        known = {k: v for k, v in data.items() if k in _ORDER_FIELDS}
        order = cls(**known)
        order.fills = list(order.fills or [])
        return order

    def to_wire(self, with_fills: bool = False) -> OrderData:
        """Return the order as the protocol struct that travels on the bus (fills optional)."""
        return OrderData(**{name: getattr(self, name) for name in _WIRE_FIELDS},
                         fills=[fill_data(f) for f in self.fills] if with_fills else [])

    @classmethod
    def from_wire(cls, data: OrderData) -> "BaseOrder":
        """Build an order from its protocol struct."""
        order = cls(**{name: getattr(data, name) for name in _WIRE_FIELDS})
        order.fills = [{"exec_id": f.exec_id, "qty": f.qty, "price": f.price, "time": f.time,
                        "commission": f.commission} for f in data.fills]
        return order


_ORDER_FIELDS = frozenset(BaseOrder.__dataclass_fields__)
_WIRE_FIELDS = tuple(name for name in BaseOrder.__dataclass_fields__ if name != "fills")
_FIELD_COUNT = len(_ORDER_FIELDS)  # a dataclass's __init__ sets every field in __dict__


def fill_data(fill: dict) -> FillData:
    """Return one of an order's fill dicts as the protocol struct, with exact types."""
    return FillData(exec_id=str(fill["exec_id"]), qty=float(fill["qty"]), price=float(fill["price"]),
                    time=int(fill.get("time") or 0), commission=float(fill.get("commission") or 0.0))


class BrokerOrder(BaseOrder):
    """An Account Manager's view of an engine order: what the broker said of it.

    Its ``set_*`` methods and ``add_fill`` record the broker's word without judging it;
    the base class sends each change to the engine as an ``OrderEvent`` and only the
    engine's ``BaseOrder`` runs the state machine. A broker author uses it exactly like a
    ``BaseOrder``.
    """

    def _move(self, status: str, reason: str = "") -> None:
        if status not in OrderStatus.ALL:
            raise IllegalTransition(f"order {self.client_order_id}: unknown status {status!r}")
        self.status = status
        if reason:
            self.reason = reason
        self.updated = int(time.time() * 1000)

    def can_move_to(self, status: str) -> bool:
        """A broker's word is always recorded; the engine decides whether it is legal."""
        return status in OrderStatus.ALL


class OrderEvent:
    """What an Account Manager reports about an order, keyed by client order id.

    Each is one ``order_event`` message (docs/PROTOCOL.md); the engine's order router
    applies it to its own order through the state machine.
    """

    SUBMITTED = "submitted"    # handed to the broker (broker_ref if known)
    ACCEPTED = "accepted"      # the broker acknowledged it; working
    FILLED = "filled"          # one execution (``fill``)
    REJECTED = "rejected"      # the broker refused the order
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    AMENDED = "amended"        # stop loss / take profit / price changed at the broker
    REFUSED = "refused"        # a request (``request``) was refused before reaching the broker
    UNKNOWN = "unknown"        # the outcome cannot be known now; ask again later, never resend
    NOT_FOUND = "not_found"    # the broker has no record of the order
    STATUS = "status"          # answer to a status request: ``status`` and every fill (``fills``)

    ALL = frozenset({SUBMITTED, ACCEPTED, FILLED, REJECTED, CANCELLED, EXPIRED, AMENDED, REFUSED,
                     UNKNOWN, NOT_FOUND, STATUS})


#: the event a broker's status word implies.
STATUS_EVENT = {
    OrderStatus.NEW: OrderEvent.STATUS,
    OrderStatus.SUBMITTED: OrderEvent.SUBMITTED,
    OrderStatus.ACCEPTED: OrderEvent.ACCEPTED,
    OrderStatus.PARTIALLY_FILLED: OrderEvent.STATUS,
    OrderStatus.FILLED: OrderEvent.STATUS,
    OrderStatus.REJECTED: OrderEvent.REJECTED,
    OrderStatus.CANCELLED: OrderEvent.CANCELLED,
    OrderStatus.EXPIRED: OrderEvent.EXPIRED,
    OrderStatus.UNKNOWN: OrderEvent.UNKNOWN,
}


#: what each bracket leg is: its order type and the parent's field that holds its level.
LEG_SHAPE = {Leg.STOP_LOSS: (OrderType.STOP, "stop_loss"), Leg.TAKE_PROFIT: (OrderType.LIMIT, "take_profit")}
_LEG_SHAPES = tuple(LEG_SHAPE.items())


def bracket_legs(parent: BaseOrder, only: str = "", order_class: type = BaseOrder) -> list:
    """Return the legs ``parent``'s stop loss / take profit make (one rule everywhere).

    A stop loss leg is a STOP order at the stop level, a take profit leg a LIMIT order at
    the target, each closing the parent's quantity; ``only`` limits it to one ``Leg``.
    """
    legs = []
    key = parent.client_order_id
    for leg, (order_type, level_field) in _LEG_SHAPES:
        level = getattr(parent, level_field)
        if level is None or (only and leg != only):
            continue
        legs.append(order_class(
            client_order_id=child_id(key, leg), account=parent.account, epic=parent.epic,
            epicBroker=parent.epicBroker, qty=-parent.qty, order_type=order_type, action=OrderAction.CLOSE,
            price=level, time_in_force=TimeInForce.GTC, source=OrderSource.BRACKET, parent=key, leg=leg))
    return legs


def leg_name(leg: str) -> str:
    """The words for a leg in a reason: 'stop loss' or 'take profit'."""
    return "stop loss" if leg == Leg.STOP_LOSS else "take profit"


def restate_legs(parent: BaseOrder, existing: dict) -> tuple[list, list]:
    """Bring a bracket's legs in line with ``parent``'s (amended) stop loss / take profit.

    ``existing`` maps ``Leg.*`` to the legs there are. Returns ``(new, changed)``: legs to
    create (sized to what the parent filled, else its quantity) and existing legs whose level
    moved or that were removed (set CANCELLED). Legs already done are left alone.
    """
    new, changed = [], []
    for leg_key, (_, level_field) in LEG_SHAPE.items():
        level = getattr(parent, level_field)
        leg = existing.get(leg_key)
        if leg is None:
            if level is not None:
                (made,) = bracket_legs(parent, only=leg_key)
                if parent.filled_qty:
                    made.qty = -parent.filled_qty
                new.append(made)
        elif not leg.is_done:
            if level is None:
                leg.set_cancelled("removed by an amend")
            else:
                leg.price = level
            changed.append(leg)
    return new, changed
