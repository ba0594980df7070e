"""The backtest loop: bars in, the strategy's requests answered as the engine would,
orders matched by the paper broker's book on bars, in one process (no bus).

One or several instruments, each with its own bars (``data``: epic -> bars of one time
frame, the *base* bars). Bars of every instrument are merged into one timeline, ordered
by the time each bar ends (then by instrument, as given). At each bar: first the orders
placed before it in its instrument are matched on it (market at its open plus slippage,
limit/stop on its high/low, then stop loss / take profit), their updates go to
``on_order``; then the bar goes to ``on_market_data`` of every subscription to it (a
subscription to a longer time frame gets the aggregated bar when its last base bar is
in). What a strategy asks for while handling one bar is therefore traded on that
instrument's next bar, as in a live run on the paper broker's replay mode.

A callback that raises stops the run with ``StrategyFailed`` (holding the traceback),
unless ``BacktestConfig.keep_going`` is set: then errors are counted and the run goes on.
"""
from __future__ import annotations

import gc
import logging
import math
import time
import traceback
from datetime import datetime, timezone
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from maotrade.backtest import metrics
from maotrade.backtest.equity import BookChanges, Columns, equity_curve
from maotrade.backtest.trades import EXIT_END, EXIT_SIGNAL, EXIT_STOP_LOSS, EXIT_TAKE_PROFIT, Trade, build_trades
from maotrade.bars import BarBuilder
from maotrade.errors import InvalidOrder, MAOTradeError, ProtocolError
from maotrade.matching import Event, PaperBook, Quote
from maotrade.messages import ClientToEngine as C, EngineToClient as E, message
from maotrade.protocol import FROM_CLIENT, PROTOCOL_VERSION, Message, encode, from_client
from maotrade.order import (BaseOrder, split_child_id, Fill, Leg, OrderAction, OrderSource, OrderStatus, OrderType,
                            TimeInForce, bracket_legs, child_id, leg_name, new_client_order_id,
                            restate_legs)
from maotrade.strategy import Strategy

log = logging.getLogger(__name__)

PROGRESS_STEP = 4096  # bars between progress callbacks


class StrategyFailed(MAOTradeError, RuntimeError):
    """A strategy callback raised during a backtest; ``traceback`` is its formatted trace,
    ``where`` says which callback on which bar."""

    def __init__(self, message_text: str, traceback_text: str, where: str):
        super().__init__(message_text)
        self.traceback = traceback_text
        self.where = where


@dataclass
class BacktestConfig:
    """What a backtest trades and at what cost.

    ``epic`` and ``time_frame`` name the instrument of a single-instrument run (bars given
    as a list) and the base bar length; with several instruments they are the first one's.
    """

    epic: str
    time_frame: int
    initial_balance: float = 100_000.0
    commission: float = 0.0  # fraction of notional per fill
    slippage: float = 0.0  # fraction of price lost on market and stop fills
    account: str = "backtest"
    currency: str = "USD"
    margin_rate: float = 0.05
    keep_going: bool = False  # count strategy errors and go on instead of stopping the run

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
    """Everything a run produced. ``instruments`` holds per-instrument figures (trades,
    P&L, exposure, buy-and-hold return); ``metrics`` the totals."""

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
    instruments: dict = field(default_factory=dict)
    #: per instrument: the base bars (for charts), in time order.
    data: dict = field(default_factory=dict)
    #: the first strategy error's traceback (with ``keep_going``), else "".
    first_error: str = ""
    error_counts: dict = field(default_factory=dict)  # "callback ExceptionType" -> count
    cpu_s: float = 0.0  # CPU seconds of the run (on a shared machine, the fairer speed)

    @property
    def bars_per_second(self) -> float:
        """Replay speed (bars over wall-clock seconds of the run, loading excluded)."""
        return self.bars / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def bars_per_cpu_second(self) -> float:
        """Bars over CPU seconds of this process during the run."""
        return self.bars / self.cpu_s if self.cpu_s > 0 else 0.0


class _Subscription:
    """Bars of one instrument at one time frame for the strategy: the base bars as they
    are, or aggregated by a ``BarBuilder``."""

    __slots__ = ("epic", "time_frame", "builder", "active", "account")

    def __init__(self, epic: str, time_frame: int, base_time_frame: int, account: str):
        self.epic, self.time_frame, self.account = epic, time_frame, account
        self.builder = BarBuilder(epic, time_frame) if time_frame != base_time_frame else None
        self.active = True

    def aggregate(self, bar: dict, base_span_ms: int) -> Optional[dict]:
        """Feed one base bar; return the aggregated bar if this one completed it."""
        builder = self.builder
        builder.update_bar(bar["date"], bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"])
        done = builder.close_due(bar["date"] + base_span_ms)
        if not done:
            return None
        return {"type": E.MARKET_DATA, "v": PROTOCOL_VERSION, "account": self.account, **done[0]}


class Prepared:
    """Bars made ready for replay, once for many runs (the optimiser's case): each bar as
    the market data message a strategy gets, and all instruments merged into one
    timeline ordered by the time each bar ends (ties in the order the instruments were
    given). Bars from ``load_bars`` already are such messages: one instrument costs nothing
    to prepare. Messages are shared by the runs: strategies
    must treat bars as read-only, as they must live.
    """

    def __init__(self, data: dict, account: str = "backtest"):
        self.data: dict[str, list[dict]] = dict(data)
        if not self.data or not all(self.data.values()):
            raise ValueError("a backtest needs at least one bar of every instrument")
        self.account = account
        self.base_time_frame = {epic: int(bars[0]["time_frame"]) for epic, bars in self.data.items()}
        streams = []
        for bars in self.data.values():
            if bars[0].get("type") == E.MARKET_DATA and bars[0].get("account") == account:
                streams.append(bars)  # load_bars made them so: nothing to copy
            else:
                streams.append([{**bar, "type": E.MARKET_DATA, "v": PROTOCOL_VERSION, "account": account}
                                for bar in bars])
        if len(streams) == 1:
            self.timeline = streams[0]
        else:
            span = {epic: tf * 1000 for epic, tf in self.base_time_frame.items()}
            rank = {epic: index for index, epic in enumerate(self.data)}
            self.timeline = sorted((bar for stream in streams for bar in stream),
                                   key=lambda bar: (bar["date"] + span[bar["epic"]], rank[bar["epic"]]))
        self._columns: Optional[Columns] = None

    def columns(self) -> Columns:
        """The timeline's dates, closes and instruments as arrays (made once, for every run)."""
        if self._columns is None:
            self._columns = Columns(self.timeline, {epic: tf * 1000 for epic, tf in self.base_time_frame.items()})
        return self._columns


def prepare(data, epic: str = "", account: str = "backtest") -> Prepared:
    """``data`` (bars of ``epic``, or epic -> bars) ready for many runs on ``account``."""
    return data if isinstance(data, Prepared) else Prepared(data if isinstance(data, dict) else {epic: list(data)},
                                                            account)


BarData = Union[list, dict, Prepared]


class Backtest:
    """Run one strategy over the bars in ``data``; ``run()`` returns the result.

    ``data`` is a list of bars of ``config.epic``, a dict epic -> list of bars (each
    list of one time frame, in time order, as ``load_bars`` returns) or ``prepare(...)``
    of them (for many runs over the same data; preparing is then not timed). The object is the
    strategy's link (``put``): requests queue and are answered in order after each
    callback, exactly one callback at a time.
    """

    def __init__(self, strategy: Strategy, data: BarData, config: BacktestConfig,
                 progress: Optional[Callable[[int], None]] = None):
        config.check()
        self.strategy = strategy
        self._given = data
        self.data: dict[str, list[dict]] = (data.data if isinstance(data, Prepared) else
                                            dict(data) if isinstance(data, dict) else {config.epic: list(data)})
        if not self.data or not all(self.data.values()):
            raise ValueError("a backtest needs at least one bar of every instrument")
        self.config = config
        self.progress = progress
        self.base_time_frame = {epic: int(bars[0]["time_frame"]) for epic, bars in self.data.items()}
        self._base_span = {epic: tf * 1000 for epic, tf in self.base_time_frame.items()}
        self.book = PaperBook(balance=config.initial_balance, commission_rate=config.commission,
                              margin_rate=config.margin_rate, account=config.account,
                              bar_epics=set(self.data), slippage=config.slippage)
        self.orders: dict[str, BaseOrder] = {}
        self._legs: dict[str, dict[str, BaseOrder]] = {}  # epic -> legs that may still work
        self.fills: list[tuple[BaseOrder, Fill]] = []
        self.subscriptions: dict[tuple, _Subscription] = {}
        self._by_epic: dict[str, list[_Subscription]] = {epic: [] for epic in self.data}
        self.errors = 0
        self.error_counts: dict[str, int] = {}
        self.first_error = ""
        self._where = "on_start"
        self._last_bar: dict[str, dict] = {}  # epic -> its latest bar replayed
        self._triggers: dict[str, tuple[float, float]] = {}  # see _refresh_triggers
        self._requests: deque = deque()
        self._handlers = {
            C.SUBSCRIBE: self._subscribe, C.UNSUBSCRIBE: self._unsubscribe,
            C.ORDER_OPEN: self._order_open, C.ORDER_CLOSE: self._order_close,
            C.ORDER_CANCEL: self._order_cancel, C.ORDER_STOP: self._order_stop,
            C.ACCOUNT_INFO_REQUEST: self._account_info, C.PORTFOLIO_REQUEST: self._portfolio,
        }

    # -- the strategy's link ---------------------------------------------------------------
    def put(self, msg: Message) -> None:
        """Take one request from the strategy (answered after the current callback)."""
        self._requests.append(msg)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> BacktestResult:
        """Replay every bar; return orders, fills, trades, equity and metrics (bars/s
        counts the whole run: preparing the bars, unless given prepared, to the last
        callback; not the figures computed after)."""
        cfg, strategy = self.config, self.strategy
        given = self._given
        # Preparing is part of the run, unless it was done once beforehand for many runs.
        started, cpu_started = time.perf_counter(), time.process_time()
        if not (isinstance(given, Prepared) and given.account == cfg.account):
            given = Prepared(self.data, cfg.account)
        timeline = given.timeline
        strategy.attach(self, [{"account": cfg.account, "state": "ready"}])
        self._call(strategy.on_start)
        changes = BookChanges(self.book.balance)
        # The bars (hundreds of thousands of dicts) never form cycles: keep the garbage
        # collector from walking them again and again while the run allocates.
        gc.freeze()
        try:
            done = self._replay(timeline, changes)
        finally:
            gc.unfreeze()
        self._where = "on_stop"
        self._call(strategy.on_stop)
        dates, equity, exposed = equity_curve(given.columns(), done, changes)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        result = self._result(done, elapsed, dates, equity, exposed)
        result.cpu_s = cpu
        return result

    def _replay(self, timeline: list[dict], changes: BookChanges) -> int:
        """The hot loop: match, deliver, answer; return the bars replayed.

        Written for speed (the benchmark's do-nothing strategy spends its time here):
        locals instead of attributes; the book asked only when orders are working or the
        bar reaches the open position's stop loss / take profit (``_refresh_triggers``);
        the account valued after the run from the book's changes (``equity_curve``), not
        on every bar; progress reported between slices of the timeline.
        """
        book, strategy, requests = self.book, self.strategy, self._requests
        positions, working = book.positions, book.working
        triggers, last_bar, by_epic = self._triggers, self._last_bar, self._by_epic
        base_span = self._base_span
        make_close = self._make_stop_close
        on_market_data = strategy.on_market_data
        record, refresh = changes.record, self._refresh_triggers
        progress = self.progress
        step = PROGRESS_STEP if progress is not None else max(1, len(timeline))
        refresh()
        for begin in range(0, len(timeline), step):
            chunk = timeline[begin:begin + step]
            for index, msg in enumerate(chunk, begin):
                epic = msg["epic"]
                if working:
                    events = book.on_bar(epic, msg, make_close)
                    if events:
                        self._publish(events)
                        record(index, book.balance, positions)
                        refresh()
                elif epic in triggers:
                    low, high = triggers[epic]
                    # Most bars reach neither level: only those that do go to the book.
                    if msg["low"] <= low or msg["high"] >= high:
                        events = book.on_bar(epic, msg, make_close)
                        if events:
                            self._publish(events)
                            record(index, book.balance, positions)
                            refresh()
                last_bar[epic] = msg
                for subscription in by_epic[epic]:
                    if not subscription.active:
                        continue
                    if subscription.builder is None:
                        out = msg
                    else:
                        out = subscription.aggregate(msg, base_span[epic])
                        if out is None:
                            continue
                    try:
                        on_market_data(out)
                    except Exception as exc:
                        self._where = (f"on_market_data({epic} {subscription.time_frame}s bar at "
                                       f"{_iso(out['date'])})")
                        self._on_error(exc)
                # Requests made on this bar's order updates and on the bar itself, in that order
                # (a live strategy gets both in one batch before the engine sees its answers).
                if requests:
                    self._drain()
                    refresh()
                if strategy.stop_requested:
                    if progress is not None:
                        progress(index + 1 - begin)
                    return index + 1
            if progress is not None:
                progress(len(chunk))
        return len(timeline)

    def _refresh_triggers(self) -> None:
        """For each instrument whose position has a stop loss or take profit: the low at or
        below which, or the high at or above which, a bar reaches one of them (after any
        change of positions or stops; falsy levels are not set)."""
        triggers = self._triggers
        triggers.clear()
        positions = self.book.positions
        for epic, levels in self.book.stops.items():
            stop_loss, take_profit = levels.get("stop_loss"), levels.get("take_profit")
            if positions[epic].qty > 0:
                triggers[epic] = (stop_loss or -math.inf, take_profit or math.inf)
            else:
                triggers[epic] = (take_profit or -math.inf, stop_loss or math.inf)

    def _result(self, done: int, elapsed: float, dates: list, equity: list, exposed: list) -> BacktestResult:
        cfg, book = self.config, self.book
        rows = [(o.epic, f.qty if o.qty > 0 else -f.qty, f.price, f.time, f.commission, _exit_reason(o))
                for o, f in self.fills]
        # What is still open at the end is valued at its instrument's last close (exit reason "end").
        for epic, position in book.positions.items():
            if not position.is_flat:
                last = self._last_bar[epic]
                rows.append((epic, -position.qty, last["close"], last["date"], 0.0, EXIT_END))
        trades = build_trades(rows)
        closed = [t.net_pnl for t in trades if t.is_closed]
        first_span = self.base_time_frame[next(iter(self.data))]
        figures = metrics.summarize(equity, cfg.initial_balance, dates[0] if dates else 0,
                                    dates[-1] if dates else 0, first_span, closed, exposed)
        figures["commission"] = book.commission_paid
        figures["bars"] = done
        instruments = {epic: metrics.instrument_figures(
            [t for t in trades if t.epic == epic], bars) for epic, bars in self.data.items()}
        figures["buy_and_hold_return"] = (sum(i["buy_and_hold_return"] for i in instruments.values())
                                          / len(instruments))
        warnings = []
        subscribed = {s.epic for s in self.subscriptions.values()}
        if not subscribed:
            epics = ", ".join(f"{e} at {self.base_time_frame[e]}s" for e in self.data)
            warnings.append(f"the strategy never subscribed to {epics}: it saw no bars")
        return BacktestResult(warnings=warnings, config=cfg, metrics=figures, trades=trades, dates=dates,
                              equity=equity, orders=list(self.orders.values()), fills=self.fills, bars=done,
                              elapsed_s=elapsed, strategy_errors=self.errors,
                              account_info=self._marked_account_info(), instruments=instruments,
                              data=self.data, first_error=self.first_error, error_counts=dict(self.error_counts))

    # -- plumbing -----------------------------------------------------------------------------
    def _call(self, fn, *args) -> None:
        """Run one strategy callback, then answer every request it (and what follows) made."""
        self._guarded(fn, *args)
        self._drain()

    def _drain(self) -> None:
        requests, handlers = self._requests, self._handlers
        while requests:
            msg = requests.popleft()
            kind = getattr(msg, "TYPE", None)
            try:
                if kind is None:  # a map, as it would travel on the wire: typed as the engine types it
                    kind = msg.get("type") if isinstance(msg, dict) else type(msg).__name__
                    msg = _as_request(msg)
                handler = handlers.get(kind)
                if handler is None:
                    raise InvalidOrder(f"a backtest does not serve {kind!r} requests")
                handler(msg)
            except InvalidOrder as exc:
                # The engine answers a request it cannot serve with an error message.
                self._guarded(self.strategy.dispatch, message(E.ERROR, reason=str(exc), request=kind))

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._on_error(exc)

    def _on_error(self, exc: Exception) -> None:
        """A callback raised (called inside the ``except``): stop the run, or count it."""
        if isinstance(exc, StrategyFailed):
            raise exc
        if not self.config.keep_going:
            self._failed(exc)
        self.errors += 1
        kind = f"{self._where.partition('(')[0]} {type(exc).__name__}"
        self.error_counts[kind] = self.error_counts.get(kind, 0) + 1
        if not self.first_error:
            self.first_error = f"in {self._where}:\n{traceback.format_exc()}"
            log.error("event=strategy_callback_failed strategy=%s where=%r", self.strategy.name, self._where)

    def _failed(self, exc: Exception) -> None:
        """Stop the run on a strategy error, carrying its traceback."""
        raise StrategyFailed(f"strategy {self.strategy.name} raised {type(exc).__name__}: {exc} in {self._where}",
                             traceback.format_exc(), self._where) from exc

    def _notify(self, order: BaseOrder, fill: Optional[Fill] = None, request: Optional[str] = None,
                error: str = "", code: str = "") -> None:
        # The fields of the dataclass, as to_dict() gives them, then the message's own
        # (``fills`` replaced): two C-level dict merges instead of a field loop.
        msg = {**order.__dict__, **_ORDER_MESSAGE}
        if fill is not None:
            msg["fills"] = [fill.to_dict()]
        if request is not None or error or code:
            msg.update(request=request, error=error or None, code=code or None)
        try:
            self.strategy.dispatch(msg)
        except Exception as exc:
            previous, self._where = self._where, f"on_order({order.client_order_id} {order.status})"
            try:
                self._on_error(exc)
            finally:
                self._where = previous

    def _publish(self, events: list[Event]) -> None:
        orders, fills, positions, notify = self.orders, self.fills, self.book.positions, self._notify
        for event in events:
            order, fill = event.order, event.fill
            key = order.client_order_id
            if key not in orders:
                orders[key] = order
            if fill is not None:
                fills.append((order, fill))
            notify(order, fill)
            # Legs end as the engine ends them: with a filled sibling, an unfilled parent or
            # a closed position.
            status = order.status
            if order.parent:
                if status == OrderStatus.FILLED:
                    self._end_legs(order.parent, f"{leg_name(order.leg)} filled")
            elif status in OrderStatus.DONE and not order.filled_qty:
                self._end_legs(key, f"parent {status.lower()}")
            if fill is not None:
                position = positions.get(order.epicBroker or order.epic)
                if position is None or position.is_flat:
                    legs = self._legs.get(order.epic)
                    if legs:
                        for other in list(legs.values()):
                            if not other.is_done:
                                other.set_cancelled("position closed")
                                notify(other)
                            legs.pop(other.client_order_id, None)  # done: no longer looked at

    def _add_leg(self, leg: BaseOrder) -> None:
        """Record a bracket leg, and index it by instrument while it may still work."""
        self.orders[leg.client_order_id] = leg
        self._legs.setdefault(leg.epic, {})[leg.client_order_id] = leg

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

    def _mark(self, epic: str) -> None:
        """Give the book the last close of ``epic`` as its price (it needs one to take orders)."""
        last = self._last_bar.get(epic)
        if last is not None:
            close = last["close"]
            self.book.quotes[epic] = Quote(close, close, last["date"])

    def _marked_account_info(self) -> dict:
        for epic in self._last_bar:
            self._mark(epic)
        return self.book.account_info(self.config.currency)

    # -- requests (answered as the engine and the paper broker answer them) ----------------------
    def _subscription_key(self, msg: Message) -> tuple:
        epic, time_frame = msg.epic, msg.time_frame
        if epic not in self.data:
            raise InvalidOrder(f"this backtest has no data for {epic!r} (it has {', '.join(self.data)})")
        base = self.base_time_frame[epic]
        if not isinstance(time_frame, int) or time_frame <= 0 or time_frame % base:
            raise InvalidOrder(f"this backtest replays {epic} at {base}s: subscribe to {base}s or a multiple "
                               f"of it, not {time_frame}s")
        return epic, time_frame

    def _subscribe(self, msg: from_client.Subscribe) -> None:
        key = self._subscription_key(msg)
        subscription = self.subscriptions.get(key)
        if subscription is None:
            subscription = self.subscriptions[key] = _Subscription(key[0], key[1], self.base_time_frame[key[0]],
                                                                   self.config.account)
            self._by_epic[key[0]].append(subscription)
        subscription.active = True

    def _unsubscribe(self, msg: from_client.Unsubscribe) -> None:
        subscription = self.subscriptions.get(self._subscription_key(msg))
        if subscription is not None:
            subscription.active = False

    def _order_open(self, msg: from_client.OrderOpen) -> None:
        self._place(BaseOrder(client_order_id=msg.client_order_id or new_client_order_id(),
                              account=self.config.account, epic=msg.epic or "", qty=msg.qty or 0,
                              order_type=str(msg.order_type or OrderType.MARKET).upper(), action=OrderAction.OPEN,
                              price=msg.price, stop_loss=msg.stop_loss, take_profit=msg.take_profit,
                              time_in_force=str(msg.time_in_force or TimeInForce.GTC).upper(),
                              source=str(msg.source or OrderSource.STRATEGY)),
                    C.ORDER_OPEN)

    def _order_close(self, msg: from_client.OrderClose) -> None:
        epic = msg.epic
        position = self.book.positions.get(epic or "")
        if position is None or position.is_flat:
            raise InvalidOrder(f"no open position in {epic} on account {self.config.account} to close")
        amount = msg.qty
        amount = abs(position.qty) if amount in (None, 0) else abs(float(amount))
        if amount > abs(position.qty) + 1e-9:
            raise InvalidOrder(f"close of {amount:g} {epic} exceeds the position of {abs(position.qty):g}")
        self._place(BaseOrder(client_order_id=msg.client_order_id or new_client_order_id(),
                              account=self.config.account, epic=epic, qty=-amount if position.qty > 0 else amount,
                              order_type=OrderType.MARKET, action=OrderAction.CLOSE,
                              source=str(msg.source or OrderSource.STRATEGY)),
                    C.ORDER_CLOSE)

    def _place(self, order: BaseOrder, request: str) -> None:
        """Check a new order as the engine does, then give it to the book."""
        if order.client_order_id in self.orders:
            self._notify(self.orders[order.client_order_id])
            return
        self.orders[order.client_order_id] = order
        try:
            order.validate()
            if order.epic not in self.data:
                raise InvalidOrder(f"unknown instrument {order.epic!r}: this backtest trades {', '.join(self.data)}")
        except InvalidOrder as exc:
            order.set_rejected(str(exc))
            self._notify(order, error=str(exc), code="invalid_order")
            return
        order.epicBroker = order.epic
        if order.action == OrderAction.OPEN and (order.stop_loss is not None or order.take_profit is not None):
            for leg in bracket_legs(order):
                self._add_leg(leg)
        self._notify(order)  # the engine's acknowledgement (NEW)
        self._mark(order.epic)
        try:
            events = self.book.close(order) if order.action == OrderAction.CLOSE else self.book.submit(order)
        except InvalidOrder as exc:
            order.set_rejected(str(exc))
            self._notify(order, request=request)
            return
        self._publish(events)

    def _known(self, msg: Message, what: str) -> BaseOrder:
        order = self.orders.get(str(msg.client_order_id))
        if order is None:
            raise InvalidOrder(f"unknown order {msg.client_order_id} on account {self.config.account}")
        if what == "cancel" and order.is_done:
            raise InvalidOrder(f"cannot cancel order {order.client_order_id}: it is {order.status}")
        return order

    def _order_cancel(self, msg: from_client.OrderCancel) -> None:
        order = self._known(msg, "cancel")
        try:
            self.book.cancel(order.client_order_id)
        except InvalidOrder as exc:
            self._notify(order, request=C.ORDER_CANCEL, error=str(exc))
            return
        self._notify(order, request=C.ORDER_CANCEL)

    def _order_stop(self, msg: from_client.OrderStop) -> None:
        order = self._known(msg, "amend")
        stop_loss, take_profit = msg.stop_loss, msg.take_profit
        epic = order.epicBroker or order.epic
        self._mark(epic)
        try:
            self.book.amend_stops(epic, stop_loss, take_profit, order.client_order_id)
        except InvalidOrder as exc:
            self._notify(order, request=C.ORDER_STOP, error=str(exc))
            return
        order.stop_loss, order.take_profit = stop_loss, take_profit
        existing = {leg: self.orders[child_id(order.client_order_id, leg)] for leg in Leg.ALL
                    if child_id(order.client_order_id, leg) in self.orders}
        new, changed = restate_legs(order, existing)
        for leg in new:
            self._add_leg(leg)
        self._notify(order, request=C.ORDER_STOP)
        for leg in new + changed:
            self._notify(leg)

    def _account_info(self, msg: dict) -> None:
        self._guarded(self.strategy.dispatch, message(E.ACCOUNT_INFO, account=self.config.account,
                                                      info=self._marked_account_info()))

    def _portfolio(self, msg: dict) -> None:
        for epic in self._last_bar:
            self._mark(epic)
        portfolio = self.book.portfolio(lambda epic: epic)
        self._guarded(self.strategy.dispatch, message(E.PORTFOLIO, account=self.config.account,
                                                      portfolio=portfolio, broker=portfolio))


#: what every order message adds to the order's fields (``fills`` replaced by the new one).
_ORDER_MESSAGE = {"type": E.ORDER, "v": PROTOCOL_VERSION, "request": None, "error": None, "code": None,
                  "fills": None, "duplicate": None}


def _as_request(msg) -> Message:
    """A request given as a map, typed as the engine types what it receives; ``InvalidOrder``
    names what is wrong with it."""
    try:
        decoded = FROM_CLIENT.decode(encode([msg]))
    except (ProtocolError, TypeError) as exc:
        raise InvalidOrder(f"not a request: {exc}") from None
    if decoded.refused:
        raise InvalidOrder(decoded.refused[0].reason)
    return decoded.messages[0]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z")


def _exit_reason(order: BaseOrder) -> str:
    """Why a fill of ``order`` closed a position: a bracket leg (stop loss / take profit,
    ``{parent}/SL`` or ``/TP``, or a close the book made without a known parent), or the
    strategy's own decision (a signal)."""
    _, leg = split_child_id(order.client_order_id)
    if leg:
        return EXIT_STOP_LOSS if leg == Leg.STOP_LOSS else EXIT_TAKE_PROFIT
    if order.source != OrderSource.STRATEGY and order.reason in (EXIT_STOP_LOSS, EXIT_TAKE_PROFIT):
        return order.reason
    return EXIT_SIGNAL


def run_backtest(strategy_class: type, params: Optional[dict], data: BarData, config: BacktestConfig,
                 progress: Optional[Callable[[int], None]] = None) -> BacktestResult:
    """Run ``strategy_class(params)`` over ``data`` (bars of ``config.epic``, or epic -> bars)
    and return the result (``result.metrics`` holds the figures).

    The library entry point for scripts and the optimiser: raises ``StrategyFailed`` when a
    callback raises (unless ``config.keep_going``) and ``ValueError`` for a bad setting.
    ``data`` is only read, so one loaded data set serves many runs.
    """
    return Backtest(strategy_class(dict(params or {})), data, config, progress=progress).run()
