"""Engine -> client: what the engine sends a client over ROUTER (and publishes on PUB).

Every message published on PUB also carries `seq` (1, 2, 3, ...): a gap means messages
were lost.
"""
from __future__ import annotations

from typing import Any, Optional

from maotrade.protocol.base import register, FillData, Message

Account = Optional[str]


class ToClient(Message, kw_only=True):
    """A message the engine sends to a client (every field present, as callbacks expect).

    What the PUB socket publishes carries `seq` besides (see above); a client's decoder
    ignores it as it ignores any field it does not know.

    request_id: the `request_id` of the request being handled when the engine sent this
    """

    request_id: Any = None


class Welcome(ToClient, kw_only=True, tag="welcome"):
    """The answer to `hello`.

    accounts: list of `{account, state, broker, data_frames, epics}`
    engine_pid: the engine's process id
    """

    accounts: list[dict[str, Any]] = []
    engine_pid: Optional[int] = None


class Subscribed(ToClient, kw_only=True, tag="subscribed"):
    """A subscription is in place.

    account: the account
    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    """

    account: Account = None
    epic: str = ""
    time_frame: int = 0


class MarketData(ToClient, kw_only=True, tag="market_data", gc=False):
    """One bar, as the worker sent it (bars of a replaying broker carry `replay_seq`).

    account: the account
    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    date: bar start, epoch ms
    open: first price
    high: highest price
    low: lowest price
    close: last price
    volume: traded volume
    completed: false while the bar is forming
    replay_seq: 0, 1, 2, ... on bars of a replaying broker
    """

    account: Account = None
    epic: str
    time_frame: int
    date: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    completed: bool = False
    replay_seq: Optional[int] = None


class MarketDataBlock(ToClient, kw_only=True, tag="market_data_block", gc=False):
    """Consecutive bars of one stream, forwarded as the worker packed them; `EngineClient.receive` hands them on as `market_data` maps.

    account: the account
    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    completed: true if every bar of the block is completed, false if every one is forming
    bars: the bars as one msgpack array of rows `[date, open, high, low, close, volume]`, in date order
    """

    account: Account = None
    epic: str
    time_frame: int
    completed: bool
    bars: bytes


class Order(ToClient, kw_only=True, tag="order"):
    """One order changed. Sent to the client that placed it (a bracket leg: to the client that placed its parent); an order no client placed (`source` `external`) goes to every named client.

    client_order_id: the order's id
    account: the account
    epic: the MAOTrade instrument code
    epicBroker: the broker's code of the instrument
    qty: signed quantity
    order_type: `MARKET`, `LIMIT` or `STOP`
    action: `open` or `close`
    price: limit or stop price
    stop_loss: stop loss level
    take_profit: take profit level
    time_in_force: `GTC`, `DAY`, `IOC` or `FOK`
    source: `strategy`, `api`, `webhook`, `operator`, `bracket` or `external`
    parent: a bracket leg's parent order id
    leg: a bracket leg's name (`SL` or `TP`)
    status: NEW, SUBMITTED, ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED, EXPIRED or UNKNOWN
    broker_ref: the broker's id of the order
    filled_qty: signed quantity filled so far
    avg_fill_price: average fill price
    reason: why (rejections, unknown outcomes)
    created: epoch ms
    updated: epoch ms
    fills: new executions in this update `{exec_id, qty (unsigned), price, time, commission}`
    request: the worker request this answers
    error: why the request failed (the order keeps its state)
    code: the engine's refusal code (see below)
    duplicate: true when the `order_open` repeated a journaled client order id
    """

    client_order_id: str = ""
    account: Account = None
    epic: str = ""
    epicBroker: str = ""
    qty: float = 0.0
    order_type: str = "MARKET"
    action: str = "open"
    price: Optional[float] = None
    stop_loss: Optional[float] = None
    take_profit: Optional[float] = None
    time_in_force: str = "GTC"
    source: str = "strategy"
    parent: str = ""
    leg: str = ""
    status: str = "NEW"
    broker_ref: str = ""
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    reason: str = ""
    created: int = 0
    updated: int = 0
    fills: list[FillData] = []
    request: Optional[str] = None
    error: Optional[str] = None
    code: Optional[str] = None
    duplicate: Optional[bool] = None


class AccountInfo(ToClient, kw_only=True, tag="account_info"):
    """Balances of one account.

    account: the account
    info: `{account, currency, balance, equity, available, margin_used, unrealized_pnl, realized_pnl, ...broker extras}`
    """

    account: Account = None
    info: dict[str, Any] = {}


class Portfolio(ToClient, kw_only=True, tag="portfolio"):
    """Positions and working orders of one account.

    account: the account
    portfolio: the engine's view `{positions: [{epic, qty, avg_price, realized_pnl, market_price, unrealized_pnl}], orders: [order...]}`
    broker: the broker's own view in the same shape
    """

    account: Account = None
    portfolio: dict[str, Any] = {}
    broker: Optional[dict[str, Any]] = None


class AccountStatus(ToClient, kw_only=True, tag="account_status"):
    """An account changed state.

    account: the account
    state: `starting`, `syncing`, `ready`, `reconnecting`, `restarting`, `disconnected` or `stopped`
    reason: why, in one line
    broker: the broker's name
    account_info: balances (when ready)
    """

    account: Account = None
    state: str = ""
    reason: str = ""
    broker: Optional[str] = None
    account_info: Optional[dict[str, Any]] = None


class Discrepancy(ToClient, kw_only=True, tag="discrepancy"):
    """Engine and broker disagree about a position or an order.

    account: the account
    id: the discrepancy's id (for `reconcile_action`)
    kind: `position` or `order`
    key: the epic or client order id
    engine: what the engine has
    broker: what the broker has
    """

    account: Account = None
    id: Optional[int] = None
    kind: str = ""
    key: str = ""
    engine: Any = None
    broker: Any = None


class Status(ToClient, kw_only=True, tag="status"):
    """The answer to `status_request`.

    status: `{engine: {...}, accounts: [...], clients: [...], strategies: [...]}` (as `maotrade status --json`)
    """

    status: dict[str, Any] = {}


class Stopping(ToClient, kw_only=True, tag="stopping"):
    """The engine is shutting down; a strategy should finish and send `bye`."""


class StaleData(ToClient, kw_only=True, tag="stale_data"):
    """A subscription went silent, or flows again.

    account: the account
    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    stale: true: silent beyond `2 x time_frame + 5` s; false: flowing again
    silent_s: seconds since the last bar
    """

    account: Account = None
    epic: str = ""
    time_frame: int = 0
    stale: bool = False
    silent_s: Optional[float] = None


class Reconcile(ToClient, kw_only=True, tag="reconcile"):
    """The answer to `reconcile_request`.

    account: the account
    discrepancies: open ones, `[{id, account, kind, key, engine, broker, found, resolution, resolved}]`
    audit: the last 50 entries `{time, account, action, detail}`
    """

    account: Account = None
    discrepancies: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []


class Reconciled(ToClient, kw_only=True, tag="reconciled"):
    """The answer to `reconcile_action`.

    account: the account
    discrepancy: the resolved one, with `resolution`
    """

    account: Account = None
    discrepancy: dict[str, Any] = {}


class Error(ToClient, kw_only=True, tag="error"):
    """A request was refused.

    reason: why, in one line
    request: the refused request's type
    """

    reason: str = ""
    request: Optional[str] = None


class WorkerError(ToClient, kw_only=True, tag="worker_error"):
    """An account's worker reported a failed request (also published on PUB).

    account: the account
    reason: the worker's one-line reason
    """

    account: Account = None
    reason: Optional[str] = None


class Risk(ToClient, kw_only=True, tag="risk"):
    """Risk limits and kill switches (docs/RISK.md).

    risk: `{kill_switch: {global, accounts: {id: effective mode}}, global: limits, accounts: {id: effective limits}, overrides, refused: {id: {code: count}}, refused_total, passed, recent_orders, daily_pnl: {id: P&L today}, orders_refused_all_reasons}`
    """

    risk: dict[str, Any] = {}


class Orders(ToClient, kw_only=True, tag="orders"):
    """The answer to `orders_request` and `order_refresh`.

    orders: orders as in `order`, with all `fills` and `done`
    """

    orders: list[dict[str, Any]] = []


class AccountReport(ToClient, kw_only=True, tag="account"):
    """The answer to `account_request`.

    account: the account
    state: the account's state (as in `account_status`)
    reason: why it is in that state
    broker: the broker's name
    account_info: balances
    portfolio: the engine's view (as in `portfolio`)
    kill_switch: the effective kill switch mode
    daily_pnl: P&L today
    last_heard_s: seconds since the worker was last heard from
    stale_data: `[{epic, time_frame}]` now stale
    subscriptions: how many market data streams the engine holds for the account
    """

    account: Account = None
    state: str = ""
    reason: str = ""
    broker: Optional[str] = None
    account_info: Optional[dict[str, Any]] = None
    portfolio: Optional[dict[str, Any]] = None
    kill_switch: Optional[str] = None
    daily_pnl: Optional[float] = None
    last_heard_s: Optional[float] = None
    stale_data: list[Any] = []
    subscriptions: int = 0


class KillSwitchChanged(ToClient, kw_only=True, tag="kill_switch"):
    """A kill switch changed (published on PUB).

    account: null = global
    mode: `active`, `reduce_only` or `halted`
    """

    account: Account = None
    mode: str = ""


class OperatorAction(ToClient, kw_only=True, tag="operator_action"):
    """What `cancel_all` or `flatten` did (also published on PUB).

    action: `cancel_all` or `flatten`
    account: null = every account
    by: the client's name
    cancelled: `[{account, client_order_id}]`
    closing: `[{account, epic, client_order_id, qty}]`
    refused: `[{account, client_order_id or epic, reason}]`
    kill_switch: flatten: the mode it left
    """

    action: str = ""
    account: Account = None
    by: str = ""
    cancelled: list[dict[str, Any]] = []
    closing: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    kill_switch: Optional[str] = None


class BalanceHistory(ToClient, kw_only=True, tag="balance_history"):
    """The answer to `balance_history_request`.

    account: the account
    points: `[{time (ms), balance, equity}]` oldest first, thinned evenly to 2000
    fills: the account's last 100 fills `{exec_id, client_order_id, epic, qty (signed), price, commission, time, external}`
    """

    account: Account = None
    points: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []


class HistoryData(ToClient, kw_only=True, tag="history_data"):
    """One part of the answer to a client's `history_request` (see History).

    account: the account
    request_id: the client's
    bars: completed bars as in `market_data`, in date order
    start: the span this part covers in full, epoch ms (null on an error)
    end: the end of that span, epoch ms (null on an error)
    done: true on the last part
    error: one line, on the last part, when the request failed
    allowance: the broker's history quota `{remaining, total, reset_s}`
    """

    account: Account = None
    request_id: Any = None
    bars: list[dict[str, Any]] = []
    start: Optional[int] = None
    end: Optional[int] = None
    done: bool = False
    error: Optional[str] = None
    allowance: Optional[dict[str, Any]] = None


#: every engine -> client message, in the order docs/PROTOCOL.md lists them.
MESSAGES = register(Welcome, Subscribed, MarketData, MarketDataBlock, Order, AccountInfo, Portfolio, AccountStatus, Discrepancy, Status,
            Stopping, StaleData, Reconcile, Reconciled, Error, WorkerError, Risk, Orders, AccountReport,
            KillSwitchChanged, OperatorAction, BalanceHistory, HistoryData)
