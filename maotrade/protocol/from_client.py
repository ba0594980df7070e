"""Client -> engine: what strategies, the CLI, the REST API and scripts send to the ROUTER.

A client first sends `hello`; the engine answers `welcome`. A request the engine cannot
process is answered with `error` (`reason`, `request` = the request's type). `account`
may be omitted when the engine runs exactly one account.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from maotrade.protocol.base import register, Message, check_nesting

Account = Optional[str]


class FromClient(Message, kw_only=True, omit_defaults=True):
    """A request a client sends to the engine.

    request_id: any value; echoed in every message the engine sends while handling the request
    """

    request_id: Any = None


class Hello(FromClient, kw_only=True, tag="hello"):
    """Introduce the client. Answer: `welcome`.

    name: orders placed by this client are attributed to it
    acks_replay: this client answers replayed bars with `bar_ack` (strategy hosts say true)
    """

    name: str = ""
    acks_replay: bool = False


class Subscribe(FromClient, kw_only=True, tag="subscribe"):
    """Receive bars of one instrument. Answer: `subscribed`, then `market_data`.

    account: the account
    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    """

    account: Account = None
    epic: str
    time_frame: int


class Unsubscribe(FromClient, kw_only=True, tag="unsubscribe"):
    """Stop receiving bars of one instrument. No answer.

    account: the account
    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    """

    account: Account = None
    epic: str
    time_frame: int


class OrderOpen(FromClient, kw_only=True, tag="order_open"):
    """Place an order. Answer: `order` messages.

    account: the account
    client_order_id: at most 64 characters; made by the engine if absent
    epic: the MAOTrade instrument code
    qty: signed, non-zero (positive buys, negative sells)
    order_type: `MARKET`, `LIMIT` or `STOP`
    price: limit or stop price (LIMIT / STOP)
    stop_loss: stop loss level (makes a bracket)
    take_profit: take profit level (makes a bracket)
    time_in_force: `GTC`, `DAY`, `IOC` or `FOK`
    source: `strategy`, `api`, `webhook` or `manual`
    """

    account: Account = None
    client_order_id: Optional[str] = None
    epic: str
    qty: float
    order_type: str = "MARKET"
    price: Optional[float] = None
    stop_loss: Optional[float] = None
    take_profit: Optional[float] = None
    time_in_force: str = "GTC"
    source: Optional[str] = None


class OrderClose(FromClient, kw_only=True, tag="order_close"):
    """Close a position at market: all of it, or `qty`. Answer: `order` messages.

    account: the account
    epic: the MAOTrade instrument code
    qty: unsigned amount to close; absent = the whole position
    client_order_id: the closing order's id; made by the engine if absent
    source: as in `order_open`
    """

    account: Account = None
    epic: str
    qty: Optional[float] = None
    client_order_id: Optional[str] = None
    source: Optional[str] = None


class OrderCancel(FromClient, kw_only=True, tag="order_cancel"):
    """Cancel a working order. Answer: `order` (CANCELLED) or `order` with `error`.

    account: the account
    client_order_id: the order to cancel
    """

    account: Account = None
    client_order_id: str


class OrderStop(FromClient, kw_only=True, tag="order_stop"):
    """Amend stop loss / take profit of an order or the position it opened. Answer: `order` with `request` = `order_stop`.

    account: the account
    client_order_id: the order
    stop_loss: the new stop loss (null clears)
    take_profit: the new take profit (null clears)
    """

    account: Account = None
    client_order_id: str
    stop_loss: Optional[float] = None
    take_profit: Optional[float] = None


class AccountInfoRequest(FromClient, kw_only=True, tag="account_info_request"):
    """Ask for balances. Answer: `account_info` (the last known now, a fresh one follows).

    account: the account
    """

    account: Account = None


class PortfolioRequest(FromClient, kw_only=True, tag="portfolio_request"):
    """Ask for positions and working orders. Answer: `portfolio`.

    account: the account
    """

    account: Account = None


class StatusRequest(FromClient, kw_only=True, tag="status_request"):
    """Ask for the engine's status. Answer: `status`."""


class StopEngine(FromClient, kw_only=True, tag="stop_engine"):
    """Stop the engine cleanly. Answer: `stopping`."""


class ReconcileRequest(FromClient, kw_only=True, tag="reconcile_request"):
    """Ask for open discrepancies between engine and broker. Answer: `reconcile`.

    account: the account
    """

    account: Account = None


class ReconcileAction(FromClient, kw_only=True, tag="reconcile_action"):
    """Resolve one discrepancy. Answer: `reconciled`.

    account: the account
    id: the discrepancy's id
    action: `adopt` or `ignore`
    """

    account: Account = None
    id: int
    action: Literal["adopt", "ignore"]


class RiskStatus(FromClient, kw_only=True, tag="risk_status"):
    """Ask for the risk limits and kill switches. Answer: `risk`."""


class RiskSet(FromClient, kw_only=True, tag="risk_set"):
    """Override risk limits (docs/RISK.md). Answer: `risk`.

    account: absent = the limits across all accounts
    limits: risk limits by name; a `null` value = no limit
    reset: drop earlier overrides first
    """

    account: Account = None
    limits: dict[str, Any] = {}
    reset: bool = False

    def __post_init__(self) -> None:
        check_nesting(limits=self.limits)


class KillSwitch(FromClient, kw_only=True, tag="kill_switch"):
    """Set a kill switch. Answer: `risk`; also published as `kill_switch`.

    mode: `active`, `reduce_only` or `halted`
    account: absent = global
    """

    mode: Literal["active", "reduce_only", "halted"]
    account: Account = None


class OrdersRequest(FromClient, kw_only=True, tag="orders_request"):
    """List journaled orders by filters, or one order by id. Answer: `orders`.

    account: only this account's orders (needed with `client_order_id`)
    epic: only this instrument
    status: only this status
    source: only this source
    since: created at or after (epoch ms)
    until: created before (epoch ms)
    limit: at most this many, 1-5000
    client_order_id: this one order
    """

    account: Account = None
    epic: Optional[str] = None
    status: Optional[str] = None
    source: Optional[str] = None
    since: Optional[int] = None
    until: Optional[int] = None
    limit: int = 500
    client_order_id: Optional[str] = None


class OrderRefresh(FromClient, kw_only=True, tag="order_refresh"):
    """Ask the broker about one order now. Answer: `orders` (the state now); the broker's answer then updates the order.

    account: the account
    client_order_id: the order
    """

    account: Account = None
    client_order_id: str


class AccountRequest(FromClient, kw_only=True, tag="account_request"):
    """Ask for everything the engine knows of one account. Answer: `account`.

    account: the account
    """

    account: Account = None


class CancelAll(FromClient, kw_only=True, tag="cancel_all"):
    """Cancel every working order. Answer: `operator_action`; the outcomes arrive as `order` updates.

    account: absent = every account
    """

    account: Account = None


class Flatten(FromClient, kw_only=True, tag="flatten"):
    """Kill switch `reduce_only`, cancel working orders, close every position at market. Answer: `operator_action`.

    account: absent = every account
    """

    account: Account = None


class BalanceHistoryRequest(FromClient, kw_only=True, tag="balance_history_request"):
    """Ask for balance points and recent fills. Answer: `balance_history`.

    account: the account
    since: epoch ms (default 0)
    """

    account: Account = None
    since: int = 0


class Bye(FromClient, kw_only=True, tag="bye"):
    """Leave; the client's subscriptions are dropped. No answer."""


class BarAck(FromClient, kw_only=True, tag="bar_ack"):
    """The client has handled a replayed bar and sent the requests it caused (see Replay). No answer.

    account: the account
    replay_seq: the bar's `replay_seq`
    """

    account: Account = None
    replay_seq: int


class HistoryRequest(FromClient, kw_only=True, tag="history_request"):
    """Ask for historical bars through an account's broker. Answer: `history_data` parts, the last with `done`.

    account: the account
    request_id: the client's id of the request, echoed in every part
    epic: the MAOTrade instrument code
    time_frame: bar length, integer seconds
    start: epoch ms; bars dated in [start, end)
    end: epoch ms
    """

    account: Account = None
    request_id: str
    epic: str
    time_frame: int
    start: int
    end: int


#: every client -> engine message, in the order docs/PROTOCOL.md lists them.
MESSAGES = register(Hello, Subscribe, Unsubscribe, OrderOpen, OrderClose, OrderCancel, OrderStop, AccountInfoRequest,
            PortfolioRequest, StatusRequest, StopEngine, ReconcileRequest, ReconcileAction, RiskStatus, RiskSet,
            KillSwitch, OrdersRequest, OrderRefresh, AccountRequest, CancelAll, Flatten, BalanceHistoryRequest,
            Bye, BarAck, HistoryRequest)
