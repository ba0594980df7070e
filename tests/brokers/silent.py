"""A paper broker that takes new orders and never answers them (a broker gone quiet in the
middle of a deal): the engine cannot know whether they were placed."""
from __future__ import annotations

from account_managers.paper import PaperAccountManager


class SilentAccountManager(PaperAccountManager):
    """Paper broker that swallows every new order without a word."""

    def do_async_request_order_open(self, order) -> None:
        return None
