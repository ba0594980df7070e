"""The risk rules' window on the running engine (``engine.risk.RiskView``): accounts,
positions, working orders, prices and P&L, read from the account book, the journal and
the order router."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Iterable, Optional

from engine.accounts import AccountBook
from engine.journal import Journal
from engine.risk_state import RiskState
from maotrade.order import BaseOrder

if TYPE_CHECKING:  # the router is attached at run time; no import needed
    from engine.orders import OrderRouter


class EngineRiskView:
    """``engine.risk.RiskView`` over the account book, the journal and the router's live orders.

    ``orders`` is the ``OrderRouter``; it is attached once built, because the router is
    itself built with the risk check that reads this view.
    """

    def __init__(self, accounts: AccountBook, journal: Journal, state: RiskState):
        self.book = accounts
        self.journal = journal
        self.state = state
        self.orders: Optional["OrderRouter"] = None

    def accounts(self) -> Iterable[str]:
        """Every account the engine runs."""
        return list(self.book)

    def position(self, account: str, epic: str) -> float:
        """Signed net position from the journal."""
        return self.journal.position(account, epic).qty

    def open_orders(self, account: str) -> list[BaseOrder]:
        """Working orders of the account."""
        return self.orders.open_orders(account) if self.orders is not None else []

    def price(self, account: str, epic: str) -> Optional[float]:
        """Last bar close, else the broker's mark of an open position."""
        runtime = self.book.get(account)
        if runtime is None:
            return None
        price = runtime.last_price.get(epic)
        if price:
            return float(price)
        for position in runtime.broker_portfolio.get("positions", []):
            if position.get("epic") == epic and position.get("market_price"):
                return float(position["market_price"])
        return None

    def total_pnl(self, account: str) -> float:
        """Realized P&L of every position plus open P&L at the last known prices."""
        total = 0.0
        for position in self.journal.positions(account):
            total += position.realized_pnl
            price = self.price(account, position.epic)
            if price is not None:
                total += position.unrealized_pnl(price)
        return total

    def daily_pnl(self, account: str) -> Optional[float]:
        """P&L since the UTC day began (or since the engine first looked that day)."""
        current = self.total_pnl(account)
        day = dt.datetime.now(dt.timezone.utc).date().isoformat()
        return current - self.state.baseline(account, day, current)
