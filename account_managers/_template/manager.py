"""``TemplateAccountManager``: every method a broker writes, and what each must do.

Read the contract in ``maotrade/account_manager.py`` first; the paper broker
(account_managers/paper) is a working example. This file shows the three things every
real broker needs and the paper broker cannot show, because it does no I/O:

- blocking client calls go through ``run_blocking`` and answer on the loop;
- a dropped connection is ``connection_lost(reason)``; the base class reconnects;
- a request that may or may not have reached the broker is ``send_order_unknown``: the
  engine asks again after reconnecting and never resends it.
"""
from __future__ import annotations

import logging

from account_managers._template import parsing
from account_managers._template.config import TemplateAccountSettings, TemplateBrokerSettings
from maotrade.account_manager import BaseAccountManager, InitResult
from maotrade.errors import BrokerUnavailable, RequestNotSent
from maotrade.order import BaseOrder

log = logging.getLogger(__name__)


class TemplateAccountManager(BaseAccountManager):
    """A broker to copy: required methods raise ``NotImplementedError`` naming themselves."""

    settings_model = TemplateBrokerSettings
    account_settings_model = TemplateAccountSettings
    #: what this broker supports; the engine checks it before routing. ``bracket``:
    #: "attached" (levels on the position), "orders" (child orders) or absent (the engine
    #: places stop loss / take profit as orders of their own once the parent has traded).
    CAPABILITIES = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": True, "stop_amend": True,
                    "partial_close": True, "market_data": True}

    # -- lifecycle -------------------------------------------------------------------
    def on_account_manager_init(self) -> InitResult:
        """Connect and log in (may block); return (ok, account_info, portfolio, order_template,
        history_frames, data_frames). Raise TemporaryError to be retried, OperationalError
        (bad credentials) to stop for good."""
        raise NotImplementedError("on_account_manager_init: connect and log in")

    def account_manager_main(self, time_now: int) -> None:
        """Poll and stream; called every loop turn. Return quickly."""
        raise NotImplementedError("account_manager_main: poll and stream")

    # -- requests: start the work, answer later through send_* -------------------------
    def do_async_request_account_info(self) -> None:
        """Fetch balances off the loop; answer with ``send_account_info``."""
        raise NotImplementedError("do_async_request_account_info: fetch balances")

    def do_async_request_portfolio(self) -> None:
        """Fetch positions and working orders; answer with ``send_portfolio``."""
        raise NotImplementedError("do_async_request_portfolio: fetch positions")

    def do_async_request_market_data(self, request: dict) -> bool:
        """Subscribe or unsubscribe (``maotrade.bars.MarketDataRequest(request)``); feed a
        ``BarBook`` and send what it returns with ``send_realtime_data``."""
        raise NotImplementedError("do_async_request_market_data: subscribe to prices")

    def do_async_request_order_open(self, order: BaseOrder) -> None:
        """Send a new order; this is the shape every request takes."""
        body = parsing.order_body(order)  # InvalidOrder here is refused before sending
        self.run_blocking(self._post_order, body,
                          on_result=lambda answer: self._order_sent(order, answer),
                          on_error=lambda exc: self._order_failed(order, exc))

    def do_async_request_order_close(self, order: BaseOrder) -> None:
        """Reduce the position in ``order.epicBroker`` by ``order.qty`` (signed)."""
        raise NotImplementedError("do_async_request_order_close: reduce the position")

    def do_async_request_stop_order(self, order: BaseOrder) -> None:
        """Amend the stop loss / take profit (or price) of ``order.client_order_id``."""
        raise NotImplementedError("do_async_request_stop_order: amend the levels")

    def do_async_request_order_status(self, order: BaseOrder) -> None:
        """Ask the broker by client order id: ``send_order_status`` with every fill, or
        ``send_order_not_found``; never guess."""
        raise NotImplementedError("do_async_request_order_status: look the order up")

    # -- the transport (runs off the loop) ------------------------------------------------
    def _post_order(self, body: dict) -> dict:
        raise NotImplementedError("_post_order: the broker's HTTP call, e.g. with requests")

    # -- answers (back on the loop) -------------------------------------------------------
    def _order_sent(self, order: BaseOrder, answer: dict) -> None:
        order.set_submitted(str(answer.get("orderId") or ""))
        self.send_request_order_response(order)

    def _order_failed(self, order: BaseOrder, exc: BaseException) -> None:
        if isinstance(exc, RequestNotSent):
            self.send_order_refused(order, str(exc))  # nothing left this process: REJECTED
            return
        # The request may have reached the broker: say so, and let the engine ask later.
        self.send_order_unknown(order, f"new order {order.client_order_id}: {exc}")
        if isinstance(exc, BrokerUnavailable):
            self.connection_lost(str(exc))
