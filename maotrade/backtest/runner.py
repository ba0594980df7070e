"""The backtest loop: bars in, the strategy's requests answered as the engine would,
orders matched by the paper broker's book on bars, in one process (no bus).

Each bar: first the orders placed before it are matched on it (market at its open plus
slippage, limit/stop on its high/low, then stop loss / take profit), their updates go
to ``on_order``; then the bar goes to ``on_market_data``. What a strategy asks for while
handling one bar is therefore traded on the next one, as in a live run on the paper
broker's replay mode.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from maotrade.backtest import metrics
from maotrade.backtest.trades import Trade, build_trades
from maotrade.errors import InvalidOrder
from maotrade.matching import Event, PaperBook
from maotrade.messages import ClientToEngine as C, EngineToClient as E, message
from maotrade.order import (BaseOrder, Fill, Leg, OrderAction, OrderSource, OrderStatus, OrderType,
                            TimeInForce, bracket_legs, child_id, leg_name, new_client_order_id,
                            restate_legs)
from maotrade.strategy import Strategy

log = logging.getLogger(__name__)


@dataclass
class BacktestConfig:
    """What a backtest trades and at what cost."""

    epic: str
    time_frame: int
    initial_balance: float = 100_000.0
    commission: float = 0.0  # fraction of notional per fill
    slippage: float = 0.0  # fraction of price lost on market and stop fills
    account: str = "backtest"
    currency: str = "USD"
    margin_rate: float = 0.05

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        if not self.epic:
            raise ValueError("epic is empty")
        if int(self.time_frame) <= 0:
            raise ValueError(f"time frame must be a positive number of seconds, got {self.time_frame}")
        if not self.initial_balance > 0:
            raise ValueError(f"initial balance must be positive, got {self.initial_balance}")
        for name in ("commission", "slippage"):
            value = getattr(self, name)
            if not 0 <= value < 0.1:
                raise ValueError(f"{name} is a fraction of price in [0, 0.1), got {value}")


@dataclass
class BacktestResult:
    """Everything a run produced."""

    config: BacktestConfig
    metrics: dict
    trades: list[Trade]
    dates: list[int]
    equity: list[float]
    orders: list[BaseOrder]
    fills: list[tuple[BaseOrder, Fill]]
    bars: int
    elapsed_s: float
    strategy_errors: int = 0
    account_info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def bars_per_second(self) -> float:
        """Replay speed (bars over wall-clock seconds of the run, loading excluded)."""
        return self.bars / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Backtest:
    """Run one strategy over ``bars`` of one instrument; ``run()`` returns the result.

    The object is the strategy's link (``put``): requests queue and are answered in
    order after each callback, exactly one callback at a time.
    """

    def __init__(self, strategy: Strategy, bars: list[dict], config: BacktestConfig,
                 progress: Optional[Callable[[int], None]] = None):
        config.check()
        self.strategy = strategy
        self.bars = bars
        self.config = config
        self.progress = progress
        self.book = PaperBook(balance=config.initial_balance, commission_rate=config.commission,
                              margin_rate=config.margin_rate, account=config.account,
                              bar_epics={config.epic}, slippage=config.slippage)
        self.orders: dict[str, BaseOrder] = {}
        self.fills: list[tuple[BaseOrder, Fill]] = []
        self.subscribed = False
        self.ever_subscribed = False
        self.errors = 0
        self._requests: deque = deque()
        self._handlers = {
            C.SUBSCRIBE: self._subscribe, C.UNSUBSCRIBE: self._unsubscribe,
            C.ORDER_OPEN: self._order_open, C.ORDER_CLOSE: self._order_close,
            C.ORDER_CANCEL: self._order_cancel, C.ORDER_STOP: self._order_stop,
            C.ACCOUNT_INFO_REQUEST: self._account_info, C.PORTFOLIO_REQUEST: self._portfolio,
        }

    # -- the strategy's link ---------------------------------------------------------------
    def put(self, msg: dict) -> None:
        """Take one request from the strategy (answered after the current callback)."""
        self._requests.append(msg)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> BacktestResult:
        """Replay every bar; return orders, fills, trades, equity and metrics."""
        cfg, strategy, book = self.config, self.strategy, self.book
        strategy.attach(self, [{"account": cfg.account, "state": "ready"}])
        started = time.perf_counter()
        dates: list[int] = []
        equity: list[float] = []
        exposed: list[bool] = []
        self._call(strategy.on_start)
        done = 0
        for bar in self.bars:
            events = book.on_bar(cfg.epic, bar, self._make_stop_close)
            if events:
                self._publish(events)
            position = book.positions.get(cfg.epic)
            held = position is not None and not position.is_flat
            dates.append(bar["date"])
            equity.append(book.balance + (position.unrealized_pnl(bar["close"]) if held else 0.0))
            exposed.append(held)
            if self.subscribed:
                self._guarded(strategy.dispatch, {"type": E.MARKET_DATA, "v": 1, "account": cfg.account, **bar})
            # Requests made on this bar's order updates and on the bar itself, in that order
            # (a live strategy gets both in one batch before the engine sees its answers).
            self._drain()
            done += 1
            if self.progress is not None and done % 1000 == 0:
                self.progress(1000)
            if strategy.stop_requested:
                break
        if self.progress is not None:
            self.progress(done % 1000)
        self._call(strategy.on_stop)
        elapsed = time.perf_counter() - started
        trades = build_trades((o.epic, f.qty if o.qty > 0 else -f.qty, f.price, f.time, f.commission)
                              for o, f in self.fills)
        closed = [t.net_pnl for t in trades if t.is_closed]
        figures = metrics.summarize(equity, cfg.initial_balance, dates[0] if dates else 0,
                                    dates[-1] if dates else 0, cfg.time_frame, closed, exposed)
        figures["commission"] = book.commission_paid
        figures["bars"] = done
        warnings = [] if self.ever_subscribed else [
            f"the strategy never subscribed to {cfg.epic} at {cfg.time_frame}s: it saw no bars"]
        return BacktestResult(warnings=warnings, config=cfg, metrics=figures, trades=trades, dates=dates, equity=equity,
                              orders=list(self.orders.values()), fills=self.fills, bars=done,
                              elapsed_s=elapsed, strategy_errors=self.errors,
                              account_info=book.account_info(cfg.currency))

    # -- plumbing -----------------------------------------------------------------------------
    def _call(self, fn, *args) -> None:
        """Run one strategy callback, then answer every request it (and what follows) made."""
        self._guarded(fn, *args)
        self._drain()

    def _drain(self) -> None:
        while self._requests:
            msg = self._requests.popleft()
            handler = self._handlers.get(msg.get("type"))
            try:
                if handler is None:
                    raise InvalidOrder(f"a backtest does not serve {msg.get('type')!r} requests")
                handler(msg)
            except InvalidOrder as exc:
                # The engine answers a request it cannot serve with an error message.
                self._guarded(self.strategy.dispatch, message(E.ERROR, reason=str(exc), request=msg.get("type")))

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # as in a live run: a bug in one callback does not end the run
            self.errors += 1
            log.exception("event=strategy_callback_failed strategy=%s", self.strategy.name)

    def _notify(self, order: BaseOrder, fill: Optional[Fill] = None, request: Optional[str] = None,
                error: str = "", code: str = "") -> None:
        view = order.to_dict()
        view.pop("fills", None)
        msg = message(E.ORDER, **view, request=request, error=error or None, code=code or None,
                      fills=[fill.to_dict()] if fill else None, duplicate=None)
        self._guarded(self.strategy.dispatch, msg)

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self.orders.setdefault(event.order.client_order_id, event.order)
            if event.fill is not None:
                self.fills.append((event.order, event.fill))
            self._notify(event.order, event.fill)
            # Legs end as the engine ends them: with a filled sibling, an unfilled parent or
            # a closed position.
            order = event.order
            if order.is_leg and order.status == OrderStatus.FILLED:
                self._end_legs(order.parent, f"{leg_name(order.leg)} filled")
            elif not order.is_leg and order.is_done and not order.filled_qty:
                self._end_legs(order.client_order_id, f"parent {order.status.lower()}")
            position = self.book.positions.get(order.epicBroker or order.epic)
            if event.fill is not None and (position is None or position.is_flat):
                for other in list(self.orders.values()):
                    if other.is_leg and not other.is_done and other.epic == order.epic:
                        other.set_cancelled("position closed")
                        self._notify(other)

    def _end_legs(self, parent_id: str, reason: str) -> None:
        for leg in Leg.ALL:
            order = self.orders.get(child_id(parent_id, leg))
            if order is not None and not order.is_done:
                order.set_cancelled(reason)
                self._notify(order)

    def _make_stop_close(self, epic: str, qty: float, reason: str, client_order_id: str = "") -> BaseOrder:
        leg = self.orders.get(client_order_id)
        if leg is not None and not leg.is_done:
            leg.qty = qty  # the position it closes
            return leg
        return BaseOrder(client_order_id=new_client_order_id("pb"), account=self.config.account,
                         epic=epic, epicBroker=epic, qty=qty, order_type=OrderType.MARKET,
                         action=OrderAction.CLOSE, source=OrderSource.EXTERNAL, reason=reason)

    # -- requests (answered as the engine and the paper broker answer them) ----------------------
    def _check_market(self, msg: dict) -> None:
        epic, time_frame = msg.get("epic"), msg.get("time_frame")
        if epic != self.config.epic or time_frame != self.config.time_frame:
            raise InvalidOrder(f"this backtest replays {self.config.epic} at {self.config.time_frame}s only, "
                               f"not {epic} at {time_frame}s")

    def _subscribe(self, msg: dict) -> None:
        self._check_market(msg)
        self.subscribed = self.ever_subscribed = True

    def _unsubscribe(self, msg: dict) -> None:
        self._check_market(msg)
        self.subscribed = False

    def _order_open(self, msg: dict, action: str = OrderAction.OPEN, request: str = C.ORDER_OPEN) -> None:
        order = BaseOrder(client_order_id=msg.get("client_order_id") or new_client_order_id(),
                          account=self.config.account, epic=msg.get("epic") or "", qty=msg.get("qty") or 0,
                          order_type=str(msg.get("order_type") or OrderType.MARKET).upper(), action=action,
                          price=msg.get("price"), stop_loss=msg.get("stop_loss"),
                          take_profit=msg.get("take_profit"),
                          time_in_force=str(msg.get("time_in_force") or TimeInForce.GTC).upper(),
                          source=str(msg.get("source") or "strategy"))
        if order.client_order_id in self.orders:
            self._notify(self.orders[order.client_order_id])
            return
        self.orders[order.client_order_id] = order
        try:
            order.validate()
            if order.epic != self.config.epic:
                raise InvalidOrder(f"unknown instrument {order.epic!r}: this backtest trades {self.config.epic}")
        except InvalidOrder as exc:
            order.set_rejected(str(exc))
            self._notify(order, error=str(exc), code="invalid_order")
            return
        order.epicBroker = order.epic
        if action == OrderAction.OPEN:
            for leg in bracket_legs(order):
                self.orders[leg.client_order_id] = leg
        self._notify(order)  # the engine's acknowledgement (NEW)
        try:
            events = self.book.close(order) if action == OrderAction.CLOSE else self.book.submit(order)
        except InvalidOrder as exc:
            order.set_rejected(str(exc))
            self._notify(order, request=request)
            return
        self._publish(events)

    def _order_close(self, msg: dict) -> None:
        epic = msg.get("epic")
        position = self.book.positions.get(epic or "")
        if position is None or position.is_flat:
            raise InvalidOrder(f"no open position in {epic} on account {self.config.account} to close")
        amount = msg.get("qty")
        amount = abs(position.qty) if amount in (None, 0) else abs(float(amount))
        if amount > abs(position.qty) + 1e-9:
            raise InvalidOrder(f"close of {amount:g} {epic} exceeds the position of {abs(position.qty):g}")
        qty = -amount if position.qty > 0 else amount
        self._order_open({**msg, "qty": qty, "order_type": OrderType.MARKET, "price": None},
                         action=OrderAction.CLOSE, request=C.ORDER_CLOSE)

    def _known(self, msg: dict, what: str) -> BaseOrder:
        order = self.orders.get(str(msg.get("client_order_id")))
        if order is None:
            raise InvalidOrder(f"unknown order {msg.get('client_order_id')} on account {self.config.account}")
        if what == "cancel" and order.is_done:
            raise InvalidOrder(f"cannot cancel order {order.client_order_id}: it is {order.status}")
        return order

    def _order_cancel(self, msg: dict) -> None:
        order = self._known(msg, "cancel")
        try:
            self.book.cancel(order.client_order_id)
        except InvalidOrder as exc:
            self._notify(order, request=C.ORDER_CANCEL, error=str(exc))
            return
        self._notify(order, request=C.ORDER_CANCEL)

    def _order_stop(self, msg: dict) -> None:
        order = self._known(msg, "amend")
        stop_loss, take_profit = msg.get("stop_loss"), msg.get("take_profit")
        try:
            self.book.amend_stops(order.epicBroker or order.epic, stop_loss, take_profit, order.client_order_id)
        except InvalidOrder as exc:
            self._notify(order, request=C.ORDER_STOP, error=str(exc))
            return
        order.stop_loss, order.take_profit = stop_loss, take_profit
        existing = {leg: self.orders[child_id(order.client_order_id, leg)] for leg in Leg.ALL
                    if child_id(order.client_order_id, leg) in self.orders}
        new, changed = restate_legs(order, existing)
        for leg in new:
            self.orders[leg.client_order_id] = leg
        self._notify(order, request=C.ORDER_STOP)
        for leg in new + changed:
            self._notify(leg)

    def _account_info(self, msg: dict) -> None:
        self._guarded(self.strategy.dispatch, message(E.ACCOUNT_INFO, account=self.config.account,
                                                      info=self.book.account_info(self.config.currency)))

    def _portfolio(self, msg: dict) -> None:
        portfolio = self.book.portfolio(lambda epic: epic)
        self._guarded(self.strategy.dispatch, message(E.PORTFOLIO, account=self.config.account,
                                                      portfolio=portfolio, broker=portfolio))
