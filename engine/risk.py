"""Pre-trade risk: limits, the kill switch and the rules an order must pass.

Pure logic: ``RiskEngine.check`` decides from the order and a ``RiskView`` (what the
engine knows of positions, working orders, prices and the day's P&L) and raises
``OrderRefused(code, message)`` on the first rule the order breaks. It touches no
socket and no file; ``engine.ops`` feeds it the engine's state.

Limits come in layers, later ones winning key by key: ``defaults`` of the engine's risk
settings file, the account document's ``accountConfig["risk"]``, then run-time
overrides. ``global`` limits apply to the sum over every account.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path
from typing import Dict, Iterable, Optional, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maotrade.config import first_error
from maotrade.errors import ConfigError, OrderRefused
from maotrade.order import BaseOrder, OrderAction


class KillMode:
    """Kill switch modes, from least to most restrictive."""

    ACTIVE = "active"
    REDUCE_ONLY = "reduce_only"
    HALTED = "halted"

    ORDER = (ACTIVE, REDUCE_ONLY, HALTED)
    ALL = frozenset(ORDER)

    @classmethod
    def strictest(cls, *modes: str) -> str:
        """The most restrictive of ``modes``."""
        return max(modes, key=cls.ORDER.index)


class RiskCode:
    """Reason codes of risk refusals (``code`` of the REJECTED order)."""

    HALTED = "kill_switch_halted"
    REDUCE_ONLY = "kill_switch_reduce_only"
    ORDER_QTY = "max_order_qty"
    ORDER_NOTIONAL = "max_order_notional"
    MIN_VALUE = "min_order_value"
    POSITION = "max_position"
    DAILY_LOSS = "daily_loss_limit"
    OPEN_ORDERS = "max_open_orders"
    RATE = "order_rate"
    NO_PRICE = "no_reference_price"
    LIMITS_UNSET = "limits_required"
    BAD_AMOUNT = "invalid_amount"


# Orders from outside the host (the REST API, webhooks) trade only under explicit size
# limits: a typo or a forged alert must not be able to trade without bounds.
LIMITED_SOURCES = frozenset({"api", "webhook"})
REQUIRED_LIMITS = ("max_order_qty", "max_order_notional")
# No order from any source may carry amounts beyond these: quantity x price then stays a
# finite number, so no fill, position or P&L can ever become inf.
MAX_AMOUNT = 1e12
MIN_AMOUNT = 1e-9


# Counts beyond this are no limit at all, and would not fit the bus's 64-bit integers.
MAX_COUNT = 1_000_000_000


class RiskLimits(BaseModel):
    """One layer of limits; ``None`` means no limit. Quantities are absolute units."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_order_qty: Optional[float] = Field(None, gt=0, description="largest |qty| of one order")
    max_order_notional: Optional[float] = Field(None, gt=0, description="largest |qty| x price of one order")
    min_order_value: Optional[float] = Field(None, gt=0, description="smallest |qty| x price of one order")
    max_position: Optional[float] = Field(None, gt=0, description="largest |net position| per instrument, "
                                                                    "counting working orders on the same side")
    daily_loss_limit: Optional[float] = Field(None, gt=0, description="loss (realized + unrealized since the "
                                                                        "UTC day began) beyond which only "
                                                                        "reducing orders pass")
    max_open_orders: Optional[int] = Field(None, ge=1, le=MAX_COUNT, description="most working orders per instrument")
    max_orders_per_window: Optional[int] = Field(None, ge=1, le=MAX_COUNT, description="most orders in rate_window_s")
    rate_window_s: float = Field(60.0, gt=0, le=86400, description="window of the order-rate limit, seconds")

NO_LIMITS = RiskLimits()


class RiskSettings(BaseModel):
    """The engine's risk settings file (``conf/risk.json`` or ``--risk-config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    defaults: RiskLimits = Field(default_factory=RiskLimits, description="limits of every account")
    global_: RiskLimits = Field(default_factory=RiskLimits, alias="global",
                                description="limits on the sum over all accounts")


def parse_limits(data: object, where: str) -> RiskLimits:
    """Validate one layer of limits; ``ConfigError`` naming the bad key in one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: risk limits must be a JSON object")
    try:
        return RiskLimits.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {first_error(exc)}") from None


def load_settings(path: Optional[Path]) -> RiskSettings:
    """Read a risk settings file; a missing default file means no engine-wide limits."""
    if path is None or not Path(path).exists():
        return RiskSettings()
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ConfigError(f"risk settings {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"risk settings {path}: must be a JSON object")
    try:
        return RiskSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"risk settings {path}: {first_error(exc)}") from None


def merge(*layers: Optional[dict]) -> RiskLimits:
    """Merge layers of explicitly set limits, later layers winning key by key."""
    out: dict = {}
    for layer in layers:
        if layer:
            out.update(layer)
    return RiskLimits.model_validate(out)


class RiskView(Protocol):
    """What the rules need to know of the engine's state."""

    def accounts(self) -> Iterable[str]:
        """Every account the engine runs."""

    def position(self, account: str, epic: str) -> float:
        """Signed net position."""

    def open_orders(self, account: str) -> list[BaseOrder]:
        """Working orders (not final)."""

    def price(self, account: str, epic: str) -> Optional[float]:
        """Last known price of ``epic`` on ``account`` (None if unknown)."""

    def daily_pnl(self, account: str) -> Optional[float]:
        """Realized + unrealized P&L since the UTC day began (None if unknown)."""


def is_reducing(position: float, qty: float) -> bool:
    """True if an order of signed ``qty`` only shrinks ``position`` (never flips it)."""
    return position != 0 and (position > 0) != (qty > 0) and abs(qty) <= abs(position) + 1e-9


class RiskEngine:
    """The rules, the kill switch, run-time overrides and refusal counters."""

    def __init__(self, settings: Optional[RiskSettings] = None, clock=time.monotonic):
        self.settings = settings or RiskSettings()
        self.account_layers: Dict[str, dict] = {}  # accountConfig["risk"], keys set explicitly
        self.overrides: Dict[str, dict] = {}  # account or "*" (global) -> keys set at run time
        self.kill: Dict[str, str] = {}  # account or "*" -> mode
        self.refused: Dict[str, Dict[str, int]] = {}  # account -> code -> count
        self.passed = 0
        self._clock = clock
        self._times: Dict[str, deque] = {}  # account or "*" -> times of orders that passed
        self._merged: Dict[str, tuple] = {}  # scope -> (effective limits, limit nothing), until a layer changes

    # -- configuration --------------------------------------------------------------
    def set_account_limits(self, account: str, data: Optional[dict]) -> None:
        """Install an account's ``accountConfig["risk"]`` (validated)."""
        layer = parse_limits(data or {}, f"account {account} accountConfig.risk")
        self.account_layers[account] = layer.model_dump(exclude_unset=True)
        self._merged.clear()

    def set_override(self, scope: str, data: dict) -> None:
        """Override limits at run time for ``scope`` (an account, or ``"*"`` for global)."""
        layer = parse_limits(data, f"risk override of {scope}")
        merged = {**self.overrides.get(scope, {}), **layer.model_dump(exclude_unset=True)}
        self.restore_override(scope, merged)
        self.limits(scope)  # the merged result must be valid too

    def restore_override(self, scope: str, data: dict) -> None:
        """Install ``scope``'s run-time overrides as saved (already validated once)."""
        self.overrides[scope] = data
        self._merged.clear()

    def clear_override(self, scope: str) -> None:
        """Drop every run-time override of ``scope``."""
        self.overrides.pop(scope, None)
        self._merged.clear()

    def set_kill(self, scope: str, mode: str) -> None:
        """Set the kill switch of an account or of every account (``"*"``)."""
        if mode not in KillMode.ALL:
            raise ConfigError(f"kill switch mode must be one of {', '.join(KillMode.ORDER)}, got {mode!r}")
        self.kill[scope] = mode

    def limits(self, scope: str) -> RiskLimits:
        """Effective limits of an account, or the global ones for ``"*"`` (merged once per
        change of a layer: the order path asks for them on every order)."""
        return self._effective(scope)[0]

    def _effective(self, scope: str) -> tuple[RiskLimits, bool]:
        """``scope``'s merged limits and whether they limit nothing."""
        known = self._merged.get(scope)
        if known is None:
            if scope == "*":
                merged = merge(self.settings.global_.model_dump(exclude_unset=True), self.overrides.get("*"))
            else:
                merged = merge(self.settings.defaults.model_dump(exclude_unset=True), self.account_layers.get(scope),
                               self.overrides.get(scope))
            known = self._merged[scope] = (merged, merged == NO_LIMITS)
        return known

    def mode(self, account: str) -> str:
        """Effective kill switch mode of an account (the stricter of its own and the global one)."""
        return KillMode.strictest(self.kill.get("*", KillMode.ACTIVE), self.kill.get(account, KillMode.ACTIVE))

    # -- the check ----------------------------------------------------------------------
    def check(self, order: BaseOrder, view: RiskView) -> None:
        """Pass ``order`` or raise ``OrderRefused``; counts what it refuses."""
        try:
            self._check(order, view)
        except OrderRefused as exc:
            counts = self.refused.setdefault(order.account, {})
            counts[exc.code] = counts.get(exc.code, 0) + 1
            raise
        now = self._clock()
        for scope in (order.account, "*"):
            times = self._times.setdefault(scope, deque())
            times.append(now)
            # Only the current window is ever counted: without a rate limit nothing else
            # prunes, and the times would grow with every order for the engine's life.
            cutoff = now - self.limits(scope).rate_window_s
            while times[0] <= cutoff:
                times.popleft()
        self.passed += 1

    def _check(self, order: BaseOrder, view: RiskView) -> None:
        account, epic, qty = order.account, order.epic, order.qty
        _check_amounts(order)
        mode = self.mode(account)
        if mode == KillMode.HALTED:
            raise OrderRefused(RiskCode.HALTED, f"kill switch is halted for account {account}: no orders")
        if order.source in LIMITED_SOURCES:
            self._check_limits_set(order)
        if mode == KillMode.ACTIVE and self._effective(account)[1] and self._effective("*")[1]:
            return  # nothing to check: spare the order path every journal read below
        position = view.position(account, epic)
        reducing = order.action == OrderAction.CLOSE or is_reducing(position, qty)
        if mode == KillMode.REDUCE_ONLY and not reducing:
            raise OrderRefused(RiskCode.REDUCE_ONLY, f"kill switch is reduce-only for account {account}: "
                                                     f"{qty:g} {epic} would not reduce the position {position:g}")
        own, every = self.limits(account), self.limits("*")
        price = order.price or view.price(account, epic)
        for limits, label in ((own, f"account {account}"), (every, "all accounts")):
            self._check_size(limits, label, order, price)
        self._check_rate(own, account, f"account {account}")
        self._check_rate(every, "*", "all accounts", prefix="global_")
        open_here = [o for o in view.open_orders(account) if o.epic == epic]
        self._check_open_orders(own, len(open_here), epic, f"account {account}")
        if every.max_open_orders is not None:
            total = sum(1 for a in view.accounts() for o in view.open_orders(a) if o.epic == epic)
            self._check_open_orders(every, total, epic, "all accounts", prefix="global_")
        if reducing:
            return
        pending = _pending_same_side(open_here, qty)
        self._check_position(own, position + pending + qty, epic, f"account {account}")
        if every.max_position is not None:
            total = sum(view.position(a, epic) + _pending_same_side(
                [o for o in view.open_orders(a) if o.epic == epic], qty) for a in view.accounts())
            self._check_position(every, total + qty, epic, "all accounts", prefix="global_")
        self._check_loss(own, view.daily_pnl(account), f"account {account}")
        if every.daily_loss_limit is not None:
            pnls = [view.daily_pnl(a) for a in view.accounts()]
            self._check_loss(every, sum(p for p in pnls if p is not None), "all accounts", prefix="global_")

    def _check_limits_set(self, order: BaseOrder) -> None:
        own, every = self.limits(order.account), self.limits("*")
        missing = [name for name in REQUIRED_LIMITS if getattr(own, name) is None and getattr(every, name) is None]
        if missing:
            raise OrderRefused(RiskCode.LIMITS_UNSET,
                               f"{order.source} orders on account {order.account} need risk limits "
                               f"{' and '.join(missing)} (set them in the risk settings file, the account's "
                               "accountConfig.risk, or PUT /api/risk/limits)")

    @staticmethod
    def _check_size(limits: RiskLimits, label: str, order: BaseOrder, price: Optional[float]) -> None:
        prefix = "" if label.startswith("account") else "global_"
        size = abs(order.qty)
        if limits.max_order_qty is not None and size > limits.max_order_qty:
            raise OrderRefused(prefix + RiskCode.ORDER_QTY, f"order of {size:g} {order.epic} exceeds "
                                                            f"max_order_qty {limits.max_order_qty:g} ({label})")
        if limits.max_order_notional is None and limits.min_order_value is None:
            return
        if not price:
            raise OrderRefused(RiskCode.NO_PRICE, f"no price known for {order.epic} on account {order.account}: "
                                                  "notional limits cannot be checked (subscribe to its market "
                                                  "data or give a limit price)")
        notional = size * price
        if limits.max_order_notional is not None and notional > limits.max_order_notional:
            raise OrderRefused(prefix + RiskCode.ORDER_NOTIONAL,
                               f"order notional {notional:,.2f} exceeds max_order_notional "
                               f"{limits.max_order_notional:,.2f} ({label})")
        if limits.min_order_value is not None and notional < limits.min_order_value:
            raise OrderRefused(prefix + RiskCode.MIN_VALUE, f"order value {notional:,.2f} is below min_order_value "
                                                            f"{limits.min_order_value:,.2f} ({label})")

    def _check_rate(self, limits: RiskLimits, scope: str, label: str, prefix: str = "") -> None:
        times = self._times.setdefault(scope, deque())
        cutoff = self._clock() - limits.rate_window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if limits.max_orders_per_window is not None and len(times) >= limits.max_orders_per_window:
            raise OrderRefused(prefix + RiskCode.RATE, f"{len(times)} orders in the last {limits.rate_window_s:g}s "
                                                       f"reach max_orders_per_window "
                                                       f"{limits.max_orders_per_window} ({label})")

    @staticmethod
    def _check_open_orders(limits: RiskLimits, count: int, epic: str, label: str, prefix: str = "") -> None:
        if limits.max_open_orders is not None and count + 1 > limits.max_open_orders:
            raise OrderRefused(prefix + RiskCode.OPEN_ORDERS, f"{count} working orders in {epic} reach "
                                                              f"max_open_orders {limits.max_open_orders} ({label})")

    @staticmethod
    def _check_position(limits: RiskLimits, projected: float, epic: str, label: str, prefix: str = "") -> None:
        if limits.max_position is not None and abs(projected) > limits.max_position + 1e-9:
            raise OrderRefused(prefix + RiskCode.POSITION, f"position in {epic} would reach {projected:g}, beyond "
                                                           f"max_position {limits.max_position:g} ({label})")

    @staticmethod
    def _check_loss(limits: RiskLimits, pnl: Optional[float], label: str, prefix: str = "") -> None:
        if limits.daily_loss_limit is not None and pnl is not None and pnl <= -limits.daily_loss_limit:
            raise OrderRefused(prefix + RiskCode.DAILY_LOSS, f"today's P&L {pnl:,.2f} has reached the "
                                                             f"daily_loss_limit {limits.daily_loss_limit:,.2f} "
                                                             f"({label}); only reducing orders pass")

    # -- reporting ----------------------------------------------------------------------
    def snapshot(self, accounts: Iterable[str]) -> dict:
        """Effective limits, kill switch modes and refusal counts, for status and the API."""
        return {
            "kill_switch": {"global": self.kill.get("*", KillMode.ACTIVE),
                            "accounts": {a: self.mode(a) for a in accounts}},
            "global": self.limits("*").model_dump(exclude_none=True),
            "accounts": {a: self.limits(a).model_dump(exclude_none=True) for a in accounts},
            "overrides": dict(self.overrides),
            "refused": {a: dict(c) for a, c in self.refused.items()},
            "refused_total": sum(sum(c.values()) for c in self.refused.values()),
            "passed": self.passed,
            "recent_orders": {scope: self.recent(scope) for scope in [*accounts, "*"]},
        }

    def recent(self, scope: str) -> int:
        """Orders of ``scope`` that passed within its current rate window."""
        cutoff = self._clock() - self.limits(scope).rate_window_s
        return sum(1 for t in self._times.get(scope, ()) if t > cutoff)


def _check_amounts(order: BaseOrder) -> None:
    for name in ("qty", "price", "stop_price", "stop_loss", "take_profit"):
        value = getattr(order, name, None)
        if value is None or value == 0:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not MIN_AMOUNT <= abs(value) <= MAX_AMOUNT:
            raise OrderRefused(RiskCode.BAD_AMOUNT, f"order {name} {value!r} is not a finite amount between "
                                                    f"{MIN_AMOUNT:g} and {MAX_AMOUNT:g}")


def _pending_same_side(orders: list[BaseOrder], qty: float) -> float:
    """Signed remaining quantity of working orders on the same side as ``qty``."""
    total = 0.0
    for order in orders:
        if (order.qty > 0) == (qty > 0) and order.action != OrderAction.CLOSE:
            remaining = abs(order.qty) - abs(order.filled_qty)
            total += remaining if qty > 0 else -remaining
    return total
