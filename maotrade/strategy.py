"""The strategy API: subclass ``Strategy``, override the callbacks, call the actions.

A strategy runs in its own process, connected to the engine over the bus, and the same
class runs unchanged in a backtest. Callbacks are called one at a time on the
strategy's own thread; actions return at once (orders answer later through
``on_order``).

Callbacks: ``on_start()``, ``on_market_data(bar)``, ``on_order(order)``,
``on_account_info(info)``, ``on_portfolio(portfolio)``, ``on_account_status(status)``,
``on_stop()``.
Actions: ``subscribe``, ``unsubscribe``, ``open_order`` (returns the client order id),
``close_order``, ``cancel_order``, ``amend_order``, ``request_account_info``,
``request_portfolio``; each takes ``account=`` where several accounts run.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Protocol

from maotrade.order import OrderType, TimeInForce, new_client_order_id
from maotrade.protocol import from_client, to_client
from maotrade.protocol.from_client import FromClient


MARKET_DATA = to_client.MarketData.TYPE


class StrategyLink(Protocol):
    """Where a strategy's requests go: the engine's bus, or a backtest."""

    def put(self, msg: FromClient) -> None:
        """Queue one request (a ``maotrade.protocol.from_client`` struct)."""


class Strategy:
    """Base class of trading strategies."""

    #: name shown in logs and the journal; defaults to the class name.
    name: str = ""

    def __init__(self, params: Optional[dict] = None):
        self.params = dict(params or {})
        self.name = self.name or type(self).__name__
        self.log = logging.getLogger(f"strategy.{self.name}")
        self.accounts: list[str] = []
        self.account_states: dict[str, str] = {}
        self._link: Optional[StrategyLink] = None
        #: True once ``stop()`` was called (read it; call ``stop()`` to set it).
        self.stop_requested = False

    # -- callbacks (override what you need) ---------------------------------------------
    def on_start(self) -> None:
        """Called once, connected, before any market data."""

    def on_market_data(self, data: dict) -> None:
        """Called with each bar: ``{account, epic, time_frame, date, open, high, low, close,
        volume, completed}``."""

    def on_order(self, order: dict) -> None:
        """Called on every change of one of this strategy's orders (see docs/PROTOCOL.md)."""

    def on_account_info(self, info: dict) -> None:
        """Called with balances: ``{account, currency, balance, equity, available, ...}``."""

    def on_portfolio(self, portfolio: dict) -> None:
        """Called with ``{positions: [...], orders: [...]}``."""

    def on_account_status(self, status: dict) -> None:
        """Called when an account changes state (ready, reconnecting, ...)."""

    def on_stale_data(self, event: dict) -> None:
        """Called when a subscription goes silent (``stale`` True) or flows again (False)."""

    def on_stop(self) -> None:
        """Called once before the strategy process ends."""

    # -- actions ---------------------------------------------------------------------------
    def subscribe(self, epic: str, time_frame: int, account: Optional[str] = None) -> None:
        """Receive bars of ``epic`` every ``time_frame`` seconds."""
        self._send(from_client.Subscribe(account=self._account(account), epic=epic, time_frame=int(time_frame)))

    def unsubscribe(self, epic: str, time_frame: int, account: Optional[str] = None) -> None:
        """Stop receiving bars of ``epic`` at ``time_frame``."""
        self._send(from_client.Unsubscribe(account=self._account(account), epic=epic, time_frame=int(time_frame)))

    def open_order(self, epic: str, qty: float, order_type: str = OrderType.MARKET,
                   price: Optional[float] = None, stop_loss: Optional[float] = None,
                   take_profit: Optional[float] = None, account: Optional[str] = None,
                   time_in_force: str = TimeInForce.GTC) -> str:
        """Place an order (``qty`` > 0 buys, < 0 sells); return its client order id."""
        client_order_id = new_client_order_id("s")
        self._send(from_client.OrderOpen(account=self._account(account), client_order_id=client_order_id,
                                         epic=epic, qty=qty, order_type=order_type, price=price,
                                         stop_loss=stop_loss, take_profit=take_profit, time_in_force=time_in_force))
        return client_order_id

    def close_order(self, epic: str, qty: Optional[float] = None, account: Optional[str] = None) -> str:
        """Close the position in ``epic``: all of it, or ``qty`` (an amount, unsigned)."""
        client_order_id = new_client_order_id("s")
        self._send(from_client.OrderClose(account=self._account(account), client_order_id=client_order_id,
                                          epic=epic, qty=qty))
        return client_order_id

    def cancel_order(self, client_order_id: str, account: Optional[str] = None) -> None:
        """Cancel a working order."""
        self._send(from_client.OrderCancel(account=self._account(account), client_order_id=client_order_id))

    def amend_order(self, client_order_id: str, stop_loss: Optional[float] = None,
                    take_profit: Optional[float] = None, account: Optional[str] = None) -> None:
        """Change the stop loss / take profit of an order or the position it opened."""
        self._send(from_client.OrderStop(account=self._account(account), client_order_id=client_order_id,
                                         stop_loss=stop_loss, take_profit=take_profit))

    def request_account_info(self, account: Optional[str] = None) -> None:
        """Ask for balances; they arrive in ``on_account_info``."""
        self._send(from_client.AccountInfoRequest(account=self._account(account)))

    def request_portfolio(self, account: Optional[str] = None) -> None:
        """Ask for positions; they arrive in ``on_portfolio``."""
        self._send(from_client.PortfolioRequest(account=self._account(account)))

    def stop(self) -> None:
        """End this strategy after the current callback."""
        self.stop_requested = True

    # -- plumbing -------------------------------------------------------------------------------
    def attach(self, link: StrategyLink, accounts: list[dict]) -> None:
        """Connect the strategy to where its requests go (done by the host, not by you)."""
        self._link = link
        self.accounts = [str(a["account"]) for a in accounts]
        self.account_states = {str(a["account"]): a.get("state", "") for a in accounts}

    def dispatch(self, msg: dict) -> None:
        """Route one engine message (as a map) to its callback (done by the host)."""
        kind = msg.get("type")
        if kind == MARKET_DATA:
            self.on_market_data(msg)
        elif kind == to_client.Order.TYPE:
            self.on_order(msg)
        elif kind == to_client.AccountInfo.TYPE:
            self.on_account_info({**(msg.get("info") or {}), "account": msg.get("account")})
        elif kind == to_client.Portfolio.TYPE:
            self.on_portfolio({**(msg.get("portfolio") or {}), "account": msg.get("account")})
        elif kind == to_client.AccountStatus.TYPE:
            self.account_states[str(msg.get("account"))] = msg.get("state", "")
            self.on_account_status(msg)
        elif kind == to_client.StaleData.TYPE:
            self.on_stale_data(msg)
        elif kind == to_client.Error.TYPE:
            self.log.warning("engine refused %s: %s", msg.get("request"), msg.get("reason"))

    def _account(self, account: Optional[str]) -> str:
        if account is not None:
            return str(account)
        if len(self.accounts) == 1:
            return self.accounts[0]
        raise ValueError(f"strategy {self.name} runs on {len(self.accounts)} accounts; pass account=")

    def _send(self, msg: FromClient) -> None:
        if self._link is None:
            raise RuntimeError(f"strategy {self.name} is not attached to an engine or backtest yet")
        self._link.put(msg)


def describe(strategy: Any) -> str:
    """Return ``module:Class`` of a strategy instance."""
    cls = type(strategy)
    return f"{cls.__module__}:{cls.__qualname__}"
