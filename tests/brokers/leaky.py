"""A careless broker that puts its secrets in log lines, exceptions and order refusals:
the engine's redaction must keep them out of every log, status, journal, answer and event."""
from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Optional

from pydantic import Field, SecretStr

from account_managers.paper import PaperAccountManager
from account_managers.paper.config import PaperAccountSettings, PaperBrokerSettings

log = logging.getLogger(__name__)


class LeakyBrokerSettings(PaperBrokerSettings):
    """Paper settings plus how to leak."""

    leak_mode: str = Field("portfolio_crash", pattern="^(portfolio_crash|order_refuse|init_crash)$")


class LeakySettings(PaperAccountSettings):
    """Paper settings plus credentials."""

    user: str = "trader"
    password: str = Field(min_length=1)
    apiKey: Optional[str] = None
    passphrase_word: Optional[SecretStr] = None  # declared secret by type, whatever its name


class LeakyAccountManager(PaperAccountManager):
    """Paper broker that leaks its secrets into logs, crashes and order refusals."""

    settings_model = LeakyBrokerSettings
    account_settings_model = LeakySettings

    def on_account_manager_init(self):
        a = self.account_settings
        log.warning("event=login user=%s password=%s", a.user, a.password)
        log.warning("event=leak_repr body=%r", {"password": a.password})
        log.warning("event=leak_json body=%s", json.dumps({"password": a.password}))
        log.warning("event=leak_urlenc body=%s", urllib.parse.urlencode({"password": a.password}))
        if self.settings.leak_mode == "init_crash":
            raise RuntimeError(f"login failed for {a.user} with password {a.password}")
        return super().on_account_manager_init()

    def do_async_request_portfolio(self):
        if self.settings.leak_mode != "portfolio_crash":
            return super().do_async_request_portfolio()
        raise RuntimeError(f"portfolio failed for {self.account_settings.user}:{self.account_settings.password}")

    def do_async_request_order_open(self, order):
        if self.settings.leak_mode != "order_refuse":
            return super().do_async_request_order_open(order)
        a = self.account_settings
        self.send_order_refused(order, f"session for {a.user}/{a.password} expired (key {a.apiKey}, "
                                       f"body {json.dumps({'password': a.password})})")


class FreeformAccountManager(LeakyAccountManager):
    """A broker without an accountConfig model (as a third-party one may be): secrets are
    then found by their key names, at any depth. Used for registry tests only."""

    account_settings_model = None
