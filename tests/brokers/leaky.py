"""A careless broker that puts its password in log lines and exceptions: the engine's
redaction must keep it out of every log, status and crash report anyway."""
from __future__ import annotations

import logging

from pydantic import Field

from account_managers.paper import PaperAccountManager
from account_managers.paper.config import PaperAccountSettings

log = logging.getLogger(__name__)


class LeakySettings(PaperAccountSettings):
    """Paper settings plus credentials."""

    user: str = "trader"
    password: str = Field(min_length=1)


class LeakyAccountManager(PaperAccountManager):
    """Paper broker that leaks its password into logs and crashes with it."""

    account_settings_model = LeakySettings

    def on_account_manager_init(self):
        log.warning("event=login user=%s password=%s", self.account_settings.user, self.account_settings.password)
        return super().on_account_manager_init()

    def do_async_request_portfolio(self):
        raise RuntimeError(f"portfolio failed for {self.account_settings.user}:{self.account_settings.password}")
