"""Engine -> worker: what the engine sends on an account's in_queue.

Each message names the Account Manager method it leads to (docs/brokers/WRITING.md).
"""
from __future__ import annotations

from typing import Literal

import msgspec

from maotrade.protocol.base import register, Message, OrderData


class MarketDataQuery(msgspec.Struct, kw_only=True):
    """What a ``market_data_request`` asks for."""

    action: Literal["subscribe", "unsubscribe", "history"] = "subscribe"
    epic: str
    epicBroker: str
    time_frame: int
    history: int = 0  # with subscribe: send the last N completed bars first (brokers that can)
    count: int = 0    # with action history: how many completed bars (brokers that can)


class HistoryQuery(msgspec.Struct, kw_only=True):
    """What a ``history_request`` asks for (checked further by the Account Manager)."""

    request_id: str
    epic: str = ""
    epicBroker: str = ""
    time_frame: int = 0
    start: int = 0
    end: int = 0


class ToWorker(Message, kw_only=True, omit_defaults=True):
    """A message the engine sends to one account's worker."""


class AccountInfoRequest(ToWorker, kw_only=True, tag="account_info_request"):
    """Ask for balances. The Account Manager calls `do_async_request_account_info()`."""


class PortfolioRequest(ToWorker, kw_only=True, tag="portfolio_request"):
    """Ask for positions and working orders. The Account Manager calls `do_async_request_portfolio()`."""


class MarketDataRequest(ToWorker, kw_only=True, tag="market_data_request"):
    """Subscribe or unsubscribe bars. The Account Manager calls `do_async_request_market_data(request)`.

    request: `{action: subscribe/unsubscribe/history, epic, epicBroker, time_frame, history: N, count: N}`
    """

    request: MarketDataQuery


class OrderOpen(ToWorker, kw_only=True, tag="order_open"):
    """Place a new order. The Account Manager calls `do_async_request_order_open(order)`.

    order: the order (as in `order`, `status` NEW)
    """

    order: OrderData


class OrderClose(ToWorker, kw_only=True, tag="order_close"):
    """Reduce or close a position. The Account Manager calls `do_async_request_order_close(order)`.

    order: a MARKET order with `action` close and the signed closing qty
    """

    order: OrderData


class OrderStop(ToWorker, kw_only=True, tag="order_stop"):
    """Amend stop loss / take profit. The Account Manager calls `do_async_request_stop_order(order)`.

    order: the order with the new `stop_loss` / `take_profit`
    """

    order: OrderData


class OrderCancel(ToWorker, kw_only=True, tag="order_cancel"):
    """Cancel a working order. The Account Manager calls `do_async_request_order_cancel(order)`.

    order: the order to cancel
    """

    order: OrderData


class OrderStatusRequest(ToWorker, kw_only=True, tag="order_status_request"):
    """Ask the broker about one order. The Account Manager calls `do_async_request_order_status(order)`.

    order: the order asked about
    """

    order: OrderData


class Shutdown(ToWorker, kw_only=True, tag="shutdown"):
    """Stop. The Account Manager calls `on_account_manager_shutdown()`, then sends `shutdown_ack` and exits."""


class MarketDataHold(ToWorker, kw_only=True, tag="market_data_hold"):
    """Pause (`hold` true) or resume streaming: a client of this account's bars has too many waiting. The base class keeps it in `market_data_held`; a source that can wait (a replay, a flood) sends nothing while it is set, a live broker's bars keep coming and the engine conflates them.

    hold: true to pause, false to resume
    """

    hold: bool


class ReplayAdvance(ToWorker, kw_only=True, tag="replay_advance"):
    """Send the next replayed bar (replaying brokers only, capability `replay`); handled by `handle_message(msg)`."""


class HistoryRequest(ToWorker, kw_only=True, tag="history_request"):
    """Fetch historical bars. The Account Manager calls `do_async_request_history(request)` (optional).

    request: `{request_id (the engine's own), epic, epicBroker, time_frame, start, end}`
    """

    request: HistoryQuery


#: every engine -> worker message, in the order docs/PROTOCOL.md lists them.
MESSAGES = register(AccountInfoRequest, PortfolioRequest, MarketDataRequest, OrderOpen, OrderClose, OrderStop,
            OrderCancel, OrderStatusRequest, Shutdown, MarketDataHold, ReplayAdvance,
            HistoryRequest)
#: the requests that carry an order, by type.
ORDER_REQUESTS = (OrderOpen, OrderClose, OrderStop, OrderCancel, OrderStatusRequest)
