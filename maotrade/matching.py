"""Order matching and the account book shared by the paper broker and the backtester
(pure: no I/O, no clock).

Two ways to match, one book. On quotes (``on_quote``, the paper broker's live mode):
market orders fill at the touch (buys at ask, sells at bid), LIMIT and STOP orders work
until the quote crosses their price. On bars (instruments in ``bar_epics``: the backtester
and the paper broker's replay mode): every order waits for the next bar (``on_bar``);
market orders fill at its open plus slippage, LIMIT and STOP orders when its high/low
reaches their price. Either way a filled order's stop loss / take profit attach to the
net position in its instrument and close it when crossed. Balance follows realized P&L
and commission; equity adds open P&L; margin is notional times ``margin_rate``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from maotrade.errors import InvalidOrder
from maotrade.order import BaseOrder, Fill, Leg, OrderAction, OrderType, child_id
from maotrade.positions import EPSILON, Position


@dataclass(slots=True)
class Quote:
    """Best bid and ask of one instrument at one moment (epoch ms)."""

    bid: float
    ask: float
    time: int

    @property
    def mid(self) -> float:
        """Midpoint of bid and ask."""
        return (self.bid + self.ask) / 2


@dataclass(slots=True)
class Event:
    """Something the book did to an order: a state change, with the fill if it traded.

    The fill is already applied to ``order`` when the event is made."""

    order: BaseOrder
    fill: Optional[Fill] = None


@dataclass
class PaperBook:
    """Working orders, positions and cash of one paper account."""

    balance: float
    commission_rate: float = 0.0
    margin_rate: float = 0.05
    exec_seq: int = 0
    account: str = ""
    positions: dict[str, Position] = field(default_factory=dict)
    working: dict[str, BaseOrder] = field(default_factory=dict)
    #: epic -> {stop_loss, take_profit, parent}: the bracket protecting the position and the
    #: client order id of the order that set it (its legs are ``child_id(parent, Leg.*)``).
    stops: dict[str, dict] = field(default_factory=dict)
    quotes: dict[str, Quote] = field(default_factory=dict)
    commission_paid: float = 0.0
    #: instruments matched on bars: their orders wait for the next ``on_bar``.
    bar_epics: set = field(default_factory=set)
    #: fraction of price lost on market and stop fills matched on bars.
    slippage: float = 0.0

    # -- requests ---------------------------------------------------------------
    def submit(self, order: BaseOrder) -> list[Event]:
        """Take a new order: fill it now if it is marketable, else keep it working."""
        quote = self._quote(order.epicBroker)
        order.broker_ref = f"P-{order.client_order_id}"
        if (order.epicBroker) in self.bar_epics:
            order.set_accepted()
            self.working[order.client_order_id] = order
            return [Event(order)]
        if order.order_type == OrderType.MARKET or self._crossed(order, quote):
            return [self._fill(order, quote, order.remaining_qty)]
        order.set_accepted()
        self.working[order.client_order_id] = order
        return [Event(order)]

    def close(self, order: BaseOrder) -> list[Event]:
        """Reduce the position in ``order``'s instrument by ``order.qty`` at market."""
        epic = order.epicBroker
        position = self.positions.get(epic)
        if position is None or position.is_flat:
            raise InvalidOrder(f"no open position in {order.epic} to close")
        if (position.qty > 0) == (order.qty > 0):
            raise InvalidOrder(f"close of {order.epic} must be opposite to the position "
                               f"({position.qty:g}), got {order.qty:g}")
        if abs(order.qty) > abs(position.qty) + EPSILON:
            raise InvalidOrder(f"close of {abs(order.qty):g} {order.epic} exceeds the position "
                               f"of {abs(position.qty):g}")
        order.action = OrderAction.CLOSE
        return self.submit(order)

    def cancel(self, client_order_id: str) -> BaseOrder:
        """Cancel a working order; ``InvalidOrder`` if it is not working."""
        order = self.working.pop(client_order_id, None)
        if order is None:
            raise InvalidOrder(f"order {client_order_id} is not working (filled, cancelled or unknown)")
        order.set_cancelled("cancelled by request")
        return order

    def amend_stops(self, epic: str, stop_loss: Optional[float], take_profit: Optional[float],
                    client_order_id: str = "") -> None:
        """Set stop loss / take profit of a working order, else of the open position."""
        working = self.working.get(client_order_id)
        if working is not None:
            working.stop_loss, working.take_profit = stop_loss, take_profit
            return
        position = self.positions.get(epic)
        if position is None or position.is_flat:
            raise InvalidOrder(f"no open position or working order in {epic} to amend")
        self._check_stops(position.qty, stop_loss, take_profit, self._quote(epic))
        parent = self.stops.get(epic, {}).get("parent") or client_order_id
        self.stops[epic] = {"stop_loss": stop_loss, "take_profit": take_profit, "parent": parent}

    # -- prices -----------------------------------------------------------------
    def on_quote(self, epic: str, quote: Quote, make_close_order) -> list[Event]:
        """Record a quote and run everything it triggers.

        ``make_close_order(epic, qty, reason, client_order_id)`` builds the order for a
        triggered stop loss / take profit: ``client_order_id`` is the bracket leg's id
        (``child_id(parent, Leg.*)``), or '' when no order is known to have set the stops.
        """
        self.quotes[epic] = quote
        events: list[Event] = []
        for key, order in list(self.working.items()):
            if (order.epicBroker) == epic and self._crossed(order, quote):
                del self.working[key]
                events.append(self._fill(order, quote, order.remaining_qty))
        stops = self.stops.get(epic)
        position = self.positions.get(epic)
        if stops and position is not None and not position.is_flat:
            reason = self._stop_hit(position.qty, stops, quote)
            if reason:
                order = make_close_order(epic, -position.qty, reason, self.leg_id(stops, reason))
                order.broker_ref = f"P-{order.client_order_id}"
                events.append(self._fill(order, quote, order.qty))
        return events

    def on_bar(self, epic: str, bar: dict, make_close_order) -> list[Event]:
        """Match the working orders of ``epic`` (an instrument in ``bar_epics``) on one bar.

        ``bar`` has ``date`` (ms), ``open``, ``high``, ``low``, ``close``. Orders fill in
        the order they were placed; then the position's stop loss / take profit are
        checked on the same bar. Where one bar reaches both, the stop loss is assumed to
        come first (the conservative reading). The bar's close becomes the mark price.
        """
        time = int(bar["date"])
        events: list[Event] = []
        working = self.working
        for key, order in list(working.items()):
            if order.epicBroker != epic:
                continue
            price = self._bar_price(order, bar)
            if price is None:
                continue
            del working[key]
            if order.action == OrderAction.CLOSE and not self._still_closes(order):
                order.set_cancelled("position already closed")
                events.append(Event(order))
                continue
            events.append(self._execute(order, order.remaining_qty, price, time))
        stops = self.stops.get(epic)
        if stops:
            position = self.positions.get(epic)
            if position is not None and not position.is_flat:
                price, reason = self._bar_stop_exit(position.qty, stops, bar)
                if reason:
                    order = make_close_order(epic, -position.qty, reason, self.leg_id(stops, reason))
                    order.broker_ref = f"P-{order.client_order_id}"
                    events.append(self._execute(order, order.qty, price, time))
        close = float(bar["close"])
        self.quotes[epic] = Quote(close, close, time)
        return events

    @staticmethod
    def leg_id(stops: dict, reason: str) -> str:
        """The client order id of the leg a triggered ``reason`` closes with ('' if no parent)."""
        parent = stops.get("parent")
        if not parent:
            return ""
        return child_id(parent, Leg.STOP_LOSS if reason == "stop loss" else Leg.TAKE_PROFIT)

    # -- account ----------------------------------------------------------------
    def account_info(self, currency: str) -> dict:
        """Return balance, equity, margin and P&L in the normalized shape."""
        unrealized = sum(p.unrealized_pnl(self._mark(e)) for e, p in self.positions.items())
        margin = sum(abs(p.qty) * (self._mark(e) or p.avg_price) * self.margin_rate
                     for e, p in self.positions.items())
        equity = self.balance + unrealized
        return {"account": self.account, "currency": currency, "balance": round(self.balance, 10),
                "equity": equity, "unrealized_pnl": unrealized, "margin_used": margin,
                "available": equity - margin,
                "realized_pnl": sum(p.realized_pnl for p in self.positions.values()),
                "commission": self.commission_paid}

    def portfolio(self, to_epic) -> dict:
        """Return open positions and working orders in the normalized shape."""
        positions = []
        for epic, pos in self.positions.items():
            if pos.is_flat:
                continue
            row = pos.to_dict(self._mark(epic))
            stops = self.stops.get(epic, {})
            row.update(epic=to_epic(epic), epicBroker=epic, stop_loss=stops.get("stop_loss"),
                       take_profit=stops.get("take_profit"))
            positions.append(row)
        orders = [{k: v for k, v in o.to_dict().items() if k != "fills"} for o in self.working.values()]
        return {"positions": positions, "orders": orders}

    # -- internals --------------------------------------------------------------
    def _quote(self, epic: str) -> Quote:
        quote = self.quotes.get(epic)
        if quote is None:
            raise InvalidOrder(f"unknown instrument {epic!r}: the paper broker has no price for it")
        return quote

    def _mark(self, epic: str) -> Optional[float]:
        quote = self.quotes.get(epic)
        return quote.mid if quote else None

    @staticmethod
    def _crossed(order: BaseOrder, quote: Quote) -> bool:
        if order.order_type == OrderType.LIMIT:
            return quote.ask <= order.price if order.qty > 0 else quote.bid >= order.price
        if order.order_type == OrderType.STOP:
            return quote.ask >= order.price if order.qty > 0 else quote.bid <= order.price
        return True

    @staticmethod
    def _stop_hit(position_qty: float, stops: dict, quote: Quote) -> str:
        stop_loss, take_profit = stops.get("stop_loss"), stops.get("take_profit")
        exit_price = quote.bid if position_qty > 0 else quote.ask
        if position_qty > 0:
            if stop_loss and exit_price <= stop_loss:
                return "stop loss"
            if take_profit and exit_price >= take_profit:
                return "take profit"
        else:
            if stop_loss and exit_price >= stop_loss:
                return "stop loss"
            if take_profit and exit_price <= take_profit:
                return "take profit"
        return ""

    @staticmethod
    def _check_stops(qty: float, stop_loss, take_profit, quote: Quote) -> None:
        exit_price = quote.bid if qty > 0 else quote.ask
        if stop_loss is not None and (stop_loss >= exit_price if qty > 0 else stop_loss <= exit_price):
            raise InvalidOrder(f"stop loss {stop_loss} is on the wrong side of the price {exit_price:.5f}")
        if take_profit is not None and (take_profit <= exit_price if qty > 0 else take_profit >= exit_price):
            raise InvalidOrder(f"take profit {take_profit} is on the wrong side of the price {exit_price:.5f}")

    def _bar_price(self, order: BaseOrder, bar: dict) -> Optional[float]:
        """The price ``order`` fills at on ``bar``, or None if the bar does not reach it."""
        open_, buy = float(bar["open"]), order.qty > 0
        worse = (1 + self.slippage) if buy else (1 - self.slippage)
        if order.order_type == OrderType.MARKET:
            return open_ * worse
        price = order.price
        if order.order_type == OrderType.LIMIT:
            # At its price or better: at the open when the bar opened beyond it.
            if buy:
                return open_ if open_ <= price else (price if bar["low"] <= price else None)
            return open_ if open_ >= price else (price if bar["high"] >= price else None)
        if buy:
            return open_ * worse if open_ >= price else (price * worse if bar["high"] >= price else None)
        return open_ * worse if open_ <= price else (price * worse if bar["low"] <= price else None)

    def _bar_stop_exit(self, position_qty: float, stops: dict, bar: dict) -> tuple[float, str]:
        """Exit price and reason if ``bar`` reaches the position's stop loss / take profit."""
        stop_loss, take_profit = stops.get("stop_loss"), stops.get("take_profit")
        open_ = float(bar["open"])
        if position_qty > 0:
            worse = 1 - self.slippage
            # A gap: the bar opened beyond a level, which then fills at the open.
            if stop_loss and open_ <= stop_loss:
                return open_ * worse, "stop loss"
            if take_profit and open_ >= take_profit:
                return open_, "take profit"
            if stop_loss and bar["low"] <= stop_loss:
                return stop_loss * worse, "stop loss"
            if take_profit and bar["high"] >= take_profit:
                return take_profit, "take profit"
        else:
            worse = 1 + self.slippage
            if stop_loss and open_ >= stop_loss:
                return open_ * worse, "stop loss"
            if take_profit and open_ <= take_profit:
                return open_, "take profit"
            if stop_loss and bar["high"] >= stop_loss:
                return stop_loss * worse, "stop loss"
            if take_profit and bar["low"] <= take_profit:
                return take_profit, "take profit"
        return 0.0, ""

    def _still_closes(self, order: BaseOrder) -> bool:
        position = self.positions.get(order.epicBroker)
        return (position is not None and not position.is_flat and (position.qty > 0) != (order.qty > 0)
                and abs(order.remaining_qty) <= abs(position.qty) + EPSILON)

    def _fill(self, order: BaseOrder, quote: Quote, qty: float) -> Event:
        price = quote.ask if qty > 0 else quote.bid
        if order.order_type == OrderType.LIMIT:
            # A limit fills at its price or better; the quote is better when it gapped.
            price = min(price, order.price) if qty > 0 else max(price, order.price)
        return self._execute(order, qty, price, quote.time)

    def _execute(self, order: BaseOrder, qty: float, price: float, time: int) -> Event:
        """Trade ``qty`` (signed) of ``order`` at ``price``: fill, commission, position, stops."""
        self.exec_seq += 1
        commission = abs(qty) * price * self.commission_rate
        fill = Fill(exec_id=f"{self.account}-E{self.exec_seq}", qty=abs(qty), price=price,
                    time=time, commission=commission)
        epic = order.epicBroker
        position = self.positions.get(epic)
        if position is None:
            position = self.positions[epic] = Position(epic)
        was_flat = position.is_flat
        self.balance += position.apply_fill(qty, price) - commission
        self.commission_paid += commission
        if position.is_flat:
            self.stops.pop(epic, None)
        elif order.action == OrderAction.OPEN and (order.stop_loss or order.take_profit):
            self.stops[epic] = {"stop_loss": order.stop_loss, "take_profit": order.take_profit,
                                "parent": order.client_order_id}
        elif was_flat:
            self.stops.pop(epic, None)
        order.add_fill(fill)
        return Event(order, fill)

