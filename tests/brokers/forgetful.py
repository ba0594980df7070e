"""A paper broker that, like IG out of its request allowance, cannot answer the first
portfolio request of each connection: it reports a temporary error and forgets the request."""
from __future__ import annotations

from account_managers.paper import PaperAccountManager
from maotrade.errors import TemporaryError


class ForgetfulAccountManager(PaperAccountManager):
    """Paper broker whose first portfolio request after each (re)connection fails."""

    def on_account_manager_init(self):
        self.portfolio_requests = 0
        return super().on_account_manager_init()

    def do_async_request_portfolio(self) -> None:
        self.portfolio_requests += 1
        if self.portfolio_requests == 1:
            raise TemporaryError("request allowance reached; next slot in 3.0s")
        super().do_async_request_portfolio()
