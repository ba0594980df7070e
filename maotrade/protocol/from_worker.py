"""Worker -> engine: what an Account Manager sends on its out_queue.

Every message carries `account`. Fills are applied by the engine exactly once, keyed by
(`account`, `exec_id`).
"""
from __future__ import annotations

from typing import Any, Literal, Optional

import msgspec

from maotrade.protocol.base import register, FillData, Message, OrderData, check_nesting

ConnectionStateName = Literal["connecting", "connected", "reconnecting", "disconnected"]
OrderEventName = Literal["submitted", "accepted", "filled", "rejected", "cancelled", "expired", "amended",
                         "refused", "unknown", "not_found", "status"]


class FromWorker(Message, kw_only=True):
    """A message an Account Manager sends to the engine.

    account: the account the worker serves
    """

    account: str


class InitResult(FromWorker, kw_only=True, tag="init_result"):
    """The broker session is up: what the account is and can do.

    ok: true (a failed init sends nothing)
    account_info: balances, as in `account_info`
    portfolio: positions and working orders, as in `portfolio`
    order_template: the broker's order defaults (informative)
    history_frames: time frames history can be asked for, `{seconds: name}` (`-1` = one day)
    data_frames: time frames of live bars, `{seconds: name}`
    capabilities: `{order_types, cancel, stop_amend, partial_close, market_data, bracket: "attached" / "orders" / absent, replay, pause (honours `market_data_hold`)}`: the engine checks them before routing
    pid: the worker's process id
    """

    ok: bool = True
    account_info: Optional[dict[str, Any]] = None
    portfolio: Optional[dict[str, Any]] = None
    order_template: Any = None
    history_frames: Optional[dict[int, str]] = None
    data_frames: Optional[dict[int, str]] = None
    capabilities: dict[str, Any] = {}
    pid: Optional[int] = None

    def __post_init__(self) -> None:
        check_nesting(account_info=self.account_info, portfolio=self.portfolio,
                      order_template=self.order_template, capabilities=self.capabilities)


class Connection(FromWorker, kw_only=True, tag="connection"):
    """The broker connection changed state.

    state: `connecting`, `connected`, `reconnecting` or `disconnected`
    reason: why, in one line
    attempt: reconnect attempts so far
    """

    state: ConnectionStateName
    reason: str = ""
    attempt: int = 0


class Heartbeat(FromWorker, kw_only=True, tag="heartbeat"):
    """The worker is alive (any message counts as a heartbeat too).

    time: epoch ms
    state: the connection state
    pending: order requests awaiting a broker answer
    """

    time: int = 0
    state: str = ""
    pending: int = 0


class AccountInfo(FromWorker, kw_only=True, tag="account_info"):
    """Balances, normalized.

    info: `{account, currency, balance, equity, available, margin_used, unrealized_pnl, realized_pnl, ...broker extras}`
    """

    info: dict[str, Any]

    def __post_init__(self) -> None:
        check_nesting(info=self.info)


class Portfolio(FromWorker, kw_only=True, tag="portfolio"):
    """Positions and working orders as the broker has them.

    portfolio: `{positions: [{epic, epicBroker, qty, avg_price, market_price, unrealized_pnl, realized_pnl, stop_loss, take_profit}], orders: [...]}`
    """

    portfolio: dict[str, Any]

    def __post_init__(self) -> None:
        check_nesting(portfolio=self.portfolio)


class OrderEvent(FromWorker, kw_only=True, tag="order_event"):
    """What the broker said of one order, keyed by `client_order_id` (see the event table below).

    client_order_id: the order's client order id
    event: what happened (the table below)
    status: the broker's word for the order's state
    broker_ref: the broker's own id of the order
    reason: why (rejections, refusals, unknown outcomes)
    fill: one new execution `{exec_id, qty (unsigned), price, time, commission}`, event `filled`
    fills: every execution, event `status`
    request: the engine request this answers
    stop_loss: the stop loss as the broker now has it
    take_profit: the take profit as the broker now has it
    price: the limit / stop price as the broker now has it
    filled_qty: the broker's cumulative filled quantity, for cross-checks
    avg_fill_price: the broker's average fill price, for cross-checks
    order: only for an order the engine did not send: its full description, so the engine can journal it
    """

    client_order_id: str
    event: OrderEventName
    status: str = ""
    broker_ref: Optional[str] = None
    reason: Optional[str] = None
    fill: Optional[FillData] = None
    fills: Optional[list[FillData]] = None
    request: Optional[str] = None
    stop_loss: Optional[float] = None
    take_profit: Optional[float] = None
    price: Optional[float] = None
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    order: Optional[OrderData] = None


class MarketData(FromWorker, kw_only=True, tag="market_data", gc=False, omit_defaults=True):
    """One bar, forming or completed (`replay_seq` only on replayed bars).

    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    date: bar start, epoch ms
    open: first price
    high: highest price
    low: lowest price
    close: last price
    volume: traded volume (0 where the broker has none)
    completed: false while the bar is forming
    replay_seq: 0, 1, 2, ... on bars of a replaying broker
    """

    epic: str
    time_frame: int
    date: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    completed: bool
    replay_seq: Optional[int] = None


class MarketDataBlock(FromWorker, kw_only=True, tag="market_data_block", gc=False):
    """Consecutive bars of one stream in one message (see `maotrade.protocol.bar_block`).

    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    completed: true if every bar of the block is completed, false if every one is forming
    bars: the bars as one msgpack array of rows `[date, open, high, low, close, volume]`, in date order (at most 5,000)
    """

    epic: str
    time_frame: int
    completed: bool
    bars: bytes


class MarketDataResponse(FromWorker, kw_only=True, tag="market_data_response"):
    """Whether a `market_data_request` was taken.

    request: the request, as sent
    ok: true if taken
    """

    request: dict[str, Any]
    ok: bool

    def __post_init__(self) -> None:
        check_nesting(request=self.request)


class AccountDisconnected(FromWorker, kw_only=True, tag="account_disconnected"):
    """The account is disconnected for good (retries exhausted, or a fatal error).

    reason: why, in one line
    fatal: true when restarting the worker will not help
    """

    reason: str = ""
    fatal: bool = False


class Error(FromWorker, kw_only=True, tag="error"):
    """A non-order request failed.

    reason: why, in one line
    request: the type of the request that failed
    """

    reason: str
    request: Optional[str] = None


class ShutdownAck(FromWorker, kw_only=True, tag="shutdown_ack"):
    """The worker has shut down its broker session and exits."""


class HistoryBar(msgspec.Struct, kw_only=True, gc=False):
    """One completed historical bar."""

    epic: str = ""
    time_frame: int = 0
    date: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    completed: bool = True


class HistoryData(FromWorker, kw_only=True, tag="history_data"):
    """One part of the answer to a `history_request` (at most 5,000 bars per part).

    request_id: the engine's id of the request
    bars: completed bars in date order
    start: start of the span this part covers in full (epoch ms; null on an error)
    end: end of that span (epoch ms; null on an error)
    done: true on the last part
    error: one line, on the last part, when the request failed
    allowance: the broker's history quota `{remaining, total, reset_s}`
    """

    request_id: str
    bars: list[HistoryBar] = []
    start: Optional[int] = None
    end: Optional[int] = None
    done: bool = False
    error: Optional[str] = None
    allowance: Optional[dict[str, Any]] = None


#: every worker -> engine message, in the order docs/PROTOCOL.md lists them.
MESSAGES = register(InitResult, Connection, Heartbeat, AccountInfo, Portfolio, OrderEvent, MarketData,
            MarketDataBlock, MarketDataResponse, AccountDisconnected, Error, ShutdownAck, HistoryData)
