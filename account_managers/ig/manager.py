"""The IG Account Manager: REST for sessions, accounts and deals; Lightstreamer for
prices, bars and trade confirmations.

Every REST call runs through ``run_blocking``; every Lightstreamer callback is handed
to the loop with ``call_soon_threadsafe``. A deal is identified by a dealReference
derived from the client order id, so an order whose answer is lost is resolved by
asking IG for that reference, never by sending it again.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from account_managers.ig import parsing as P
from account_managers.ig.config import IGAccountSettings, IGBrokerSettings
from account_managers.ig.deals import (AMEND, CANCEL, CLOSE, OPEN_MARKET, OPEN_WORKING, Batch,
                                       DealBook)
from account_managers.ig.rest import IGApiError, IGRestClient, IGSession
from account_managers.ig.streaming import DISCONNECTED_PREFIX, IGStream
from account_managers.ig.throttle import NON_TRADING, Throttle, reconnect_pace
from maotrade.account_manager import BaseAccountManager, InitResult
from maotrade.errors import (BrokerUnavailable, InvalidOrder, MAOTradeError, OperationalError,
                             ProtocolError, RequestNotSent, TemporaryError)
from maotrade.protocol import to_worker
from maotrade.order import (BaseOrder, BracketKind, BrokerOrder, Fill, Leg, OrderAction, OrderSource, OrderStatus,
                            OrderType, child_id)

log = logging.getLogger(__name__)

ORDER_TEMPLATE = {"order_types": ["MARKET", "LIMIT", "STOP"], "time_in_force": ["GTC"],
                  "stop_loss": True, "take_profit": True, "partial_close": True}
TRADE_KEY = "TRADE"
#: non-trading requests a connection takes (login, account switch, accounts, positions,
#: working orders, the order check after it), with a few to spare for status requests.
CONNECT_REQUESTS = 10


class IGAccountManager(BaseAccountManager):
    """IG Markets (demo or live) through its REST and Lightstreamer APIs."""

    settings_model = IGBrokerSettings
    account_settings_model = IGAccountSettings
    CAPABILITIES = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": True,
                    "stop_amend": True, "partial_close": True, "market_data": True,
                    "bracket": BracketKind.ATTACHED}

    def __init__(self, config, in_queue, out_queue):
        super().__init__(config, in_queue, out_queue)
        s, a = self.settings, self.account_settings
        self.throttle = Throttle(s.app_non_trading_per_minute, s.account_trading_per_minute,
                                 s.account_non_trading_per_minute)
        self.rest = IGRestClient(s.endpoint_demo if a.demo else s.endpoint_prod, a.user, a.password.get_secret_value(),
                                 a.apiKey.get_secret_value(), a.accountId, s.timeout, self.throttle,
                                 on_session=self._session_from_thread)
        self.stream: Optional[IGStream] = None
        self.deals = DealBook()
        self.chart_subs: dict[str, tuple[str, int]] = {}  # CHART item -> (MAOTrade epic, seconds)
        self.quotes: dict[str, tuple[float, float]] = {}
        self.working_by_deal: dict[str, str] = {}  # working order dealId -> client order id
        self.realized_pnl = 0.0
        self._close_ids: set[str] = set()
        # Positions whose stop / limit are a bracket: dealId -> the parent's client order id;
        # and the deals our own closes take (their OPU DELETED is not a leg firing).
        self._bracket_deals: dict[str, str] = {}
        self._closing_deals: set[str] = set()
        self._next_resync = 0.0
        self.history_allowance: Optional[dict] = None  # IG's last word on the weekly price allowance

    # ================================================================ lifecycle
    def on_account_manager_init(self) -> InitResult:
        """Log in, switch account, load account and portfolio, open the streams."""
        self._close_stream()
        try:
            session = self.rest.login()
            info = self._fetch_account_info()
            portfolio = self._fetch_portfolio()
        except IGApiError as exc:
            raise BrokerUnavailable(str(exc)) from exc
        self._open_stream(session)
        self.call_soon_threadsafe(self._resync_orders)
        log.info("event=ig_connected account=%s ig_account=%s positions=%d", self.account_id,
                 session.account_id, len(portfolio["positions"]))
        return True, info, portfolio, ORDER_TEMPLATE, P.HISTORY_FRAMES, P.DATA_FRAMES

    def reconnect_delay(self, attempt: int) -> float:
        """The base backoff, but never faster than leaves a connection's requests free in
        IG's non-trading allowance (``reconnect_pace``)."""
        s = self.settings
        limit = min(s.app_non_trading_per_minute, s.account_non_trading_per_minute)
        return max(super().reconnect_delay(attempt), reconnect_pace(limit, CONNECT_REQUESTS))

    def on_account_manager_shutdown(self) -> None:
        """Close the stream and log out."""
        self._close_stream()
        self.rest.logout()
        self.rest.close()

    def account_manager_main(self, time_now: int) -> None:
        """Check working orders against IG now and then (they can fill or expire unseen)."""
        interval = self.settings.resync_interval
        if interval and time.monotonic() >= self._next_resync:
            self._next_resync = time.monotonic() + interval
            self._resync_orders()

    # ================================================================ streams
    def _open_stream(self, session: IGSession) -> None:
        guard = self.new_session()
        s = self.settings
        update = guard(self._on_stream_update)
        stream = IGStream(session.lightstreamer_endpoint, session.account_id, session.stream_password,
                          s.lightstreamer_adapter_set,
                          deliver=lambda key, item, values, changed: update(key, values, changed),
                          on_status=guard(self._on_stream_status), on_error=guard(self._on_stream_error),
                          keepalive_ms=s.stream_keepalive_ms, stalled_ms=s.stream_stalled_ms,
                          reconnect_ms=s.stream_reconnect_ms)
        stream.subscribe(TRADE_KEY, "DISTINCT", [f"TRADE:{session.account_id}"], P.TRADE_FIELDS, False)
        for item in self.chart_subs:
            stream.subscribe(item, "MERGE", [item], P.CHART_FIELDS, True)
        for epic_broker in {item.split(":")[1] for item in self.chart_subs}:
            self._subscribe_market(stream, epic_broker)
        # Until the server confirms the trade subscription, a fill or a stop firing would go
        # unseen: the account is not connected before that.
        if not stream.connect(s.stream_connect_timeout, confirmed=(TRADE_KEY,)):
            failure = stream.failure or f"no stream within {s.stream_connect_timeout:g}s"
            stream.close()
            raise BrokerUnavailable(f"IG Lightstreamer at {session.lightstreamer_endpoint}: {failure}")
        self.stream = stream

    def _close_stream(self) -> None:
        if self.stream is not None:
            self.end_session()
            self.stream.close()
            self.stream = None

    @staticmethod
    def _subscribe_market(stream: IGStream, epic_broker: str) -> None:
        stream.subscribe(f"MARKET:{epic_broker}", "MERGE", [f"MARKET:{epic_broker}"], P.MARKET_FIELDS, True)

    def _on_stream_status(self, status: str) -> None:
        log.info("event=ig_stream_status account=%s status=%s", self.account_id, status)
        # Statuses queue up while the loop is busy; a drop the library already healed
        # (the stream is connected again by now) needs no reconnect of ours.
        live = self.stream is not None and self.stream.connected.is_set()
        if not status.startswith(DISCONNECTED_PREFIX) or not self.is_connected:
            return
        if live:
            self._resync_orders()  # updates sent during the gap are lost: ask IG instead
            return
        self._close_stream()
        self.connection_lost(f"IG stream dropped ({status})")

    def _on_stream_error(self, key: str, reason: str) -> None:
        log.warning("event=ig_subscription_refused account=%s item=%s reason=%s", self.account_id, key, reason)
        if key in self.chart_subs:
            del self.chart_subs[key]
            self.send_error(reason)

    def _on_stream_update(self, key: str, values: dict, changed: set) -> None:
        try:
            if key == TRADE_KEY:
                self._on_trade(values, changed)
            elif key.startswith("MARKET:"):
                if values.get("BID") and values.get("OFFER"):
                    self.quotes[key[7:]] = (P.to_float(values["BID"], "BID"), P.to_float(values["OFFER"], "OFFER"))
            elif key in self.chart_subs:
                epic, time_frame = self.chart_subs[key]
                bar = P.chart_bar(epic, time_frame, values)
                if bar is not None:
                    self.send_realtime_data(bar)
        except ProtocolError as exc:
            log.warning("event=ig_bad_stream_update account=%s item=%s reason=%s", self.account_id, key, exc)

    def _on_trade(self, values: dict, changed: set) -> None:
        confirm = P.parse_json_field(values.get("CONFIRMS"), "CONFIRMS") if "CONFIRMS" in changed else None
        if confirm:
            self._apply_confirm(confirm)
        opu = P.parse_json_field(values.get("OPU"), "OPU") if "OPU" in changed else None
        if opu and opu.get("status") == "OPEN" and opu.get("dealId") in self.working_by_deal:
            self._working_filled(opu.get("dealId"), opu.get("dealReference"), opu.get("size"), opu.get("level"))
        elif (opu and opu.get("status") == "DELETED" and opu.get("dealId") in self._bracket_deals
              and opu.get("dealId") not in self._closing_deals):
            self._leg_fired(self._bracket_deals.pop(opu["dealId"]), opu)

    def _leg_fired(self, parent_id: str, opu: dict) -> None:
        """IG closed a bracket's position on its stop or limit: that leg filled."""
        try:
            level, size = P.to_float(opu.get("level"), "level"), abs(P.to_float(opu.get("size"), "size"))
        except ProtocolError as exc:
            log.warning("event=ig_bad_opu account=%s reason=%s", self.account_id, exc)
            return
        stop, limit = opu.get("stopLevel"), opu.get("limitLevel")
        if stop is not None and (limit is None or abs(level - stop) <= abs(level - limit)):
            leg, order_type, price = Leg.STOP_LOSS, OrderType.STOP, stop
        else:
            leg, order_type, price = Leg.TAKE_PROFIT, OrderType.LIMIT, limit
        key = child_id(parent_id, leg)
        order = self.orders.get(key)
        if order is None:
            long = opu.get("direction") == "BUY"
            epic_broker = str(opu.get("epic") or "")
            order = self.orders[key] = BrokerOrder(
                client_order_id=key, account=self.account_id, epic=self.to_maotrade_epic(epic_broker),
                epicBroker=epic_broker, qty=-size if long else size, order_type=order_type,
                action=OrderAction.CLOSE, price=price, source=OrderSource.BRACKET, parent=parent_id, leg=leg)
        order.broker_ref = str(opu.get("dealId"))
        self._fill(order, {"dealReference": leg, "dealId": opu.get("dealId"), "level": level}, size)

    def _session_from_thread(self, session: IGSession) -> None:
        self.call_soon_threadsafe(self._tokens_renewed, session)

    def _tokens_renewed(self, session: IGSession) -> None:
        if self.stream is not None:
            self.stream.set_password(session.stream_password)

    # ================================================================ account
    def do_async_request_account_info(self) -> None:
        """GET /accounts, answered with the normalized row of our account."""
        self.run_blocking(self._fetch_account_info, on_result=self.send_account_info,
                          on_error=self._request_failed("account info"))

    def do_async_request_portfolio(self) -> None:
        """GET /positions and /workingorders, netted per instrument."""
        self.run_blocking(self._fetch_portfolio, on_result=self.send_portfolio,
                          on_error=self._request_failed("portfolio"))

    def _fetch_account_info(self) -> dict:
        rows = (self.rest.get("/accounts") or {}).get("accounts") or []
        row = next((r for r in rows if r.get("accountId") == self.rest.account_id), None)
        if row is None:
            raise ProtocolError(f"IG /accounts does not list account {self.rest.account_id}")
        return P.normalize_account(row, self.realized_pnl)

    def _fetch_portfolio(self) -> dict:
        positions = (self.rest.get("/positions", 2) or {}).get("positions") or []
        working = (self.rest.get("/workingorders", 2) or {}).get("workingOrders") or []
        orders = P.normalize_working_orders(working, self.to_maotrade_epic)
        for row in orders:
            row["client_order_id"] = self.working_by_deal.get(row["broker_ref"], "")
        return {"positions": P.normalize_positions(positions, self.to_maotrade_epic), "orders": orders}

    def _request_failed(self, what: str):
        def failed(exc: BaseException) -> None:
            _stop_if_operational(exc)
            self.send_error(f"IG {what} request failed: {exc}")
            if isinstance(exc, BrokerUnavailable):
                self.connection_lost(str(exc))
        return failed

    # ================================================================ market data
    def do_async_request_market_data(self, request: dict) -> bool:
        """Subscribe or unsubscribe CHART:{epic}:{scale} (and MARKET:{epic} for quotes)."""
        epic = request.get("epic") or ""
        epic_broker = request["epicBroker"]
        try:
            time_frame = int(request.get("time_frame", 0))
        except (TypeError, ValueError):
            raise InvalidOrder(f"time_frame {request.get('time_frame')!r} is not a number of seconds") from None
        if time_frame not in P.CHART_SCALES:
            raise InvalidOrder(f"time frame {time_frame}s not offered by IG; choose one of "
                               f"{sorted(P.CHART_SCALES)}")
        item = f"CHART:{epic_broker}:{P.CHART_SCALES[time_frame]}"
        if request.get("action", "subscribe") == "unsubscribe":
            if self.chart_subs.pop(item, None) is None:
                return False
            if self.stream is not None:
                self.stream.unsubscribe(item)
                if not any(k.split(":")[1] == epic_broker for k in self.chart_subs):
                    self.stream.unsubscribe(f"MARKET:{epic_broker}")
            return True
        if request.get("action", "subscribe") != "subscribe":
            raise InvalidOrder(f"market data action {request.get('action')!r} is neither subscribe nor unsubscribe")
        if item not in self.chart_subs:
            self.chart_subs[item] = (epic or self.to_maotrade_epic(epic_broker), time_frame)
            if self.stream is not None:
                self.stream.subscribe(item, "MERGE", [item], P.CHART_FIELDS, True)
                if f"MARKET:{epic_broker}" not in self.stream.subscriptions:
                    self._subscribe_market(self.stream, epic_broker)
        return True

    # ================================================================ history
    def do_async_request_history(self, request: dict) -> None:
        """Page through GET /prices/{epic} (v3) off the loop; each page becomes one part.

        IG counts every price point against a weekly allowance: a page is only asked for
        while the allowance last reported can pay for it, and each part carries what is left.
        """
        if request["time_frame"] not in P.PRICE_RESOLUTIONS:
            self.send_history_error(request["request_id"], f"IG has no {request['time_frame']}s resolution; "
                                                           f"one of {sorted(P.PRICE_RESOLUTIONS)}")
            return
        self.run_blocking(self._fetch_history, request,
                          on_error=lambda exc: self._history_failed(request, exc))

    def _fetch_history(self, request: dict) -> None:
        """Runs on a worker thread; hands each page to the loop."""
        page_size, span = self.settings.history_page_size, request["time_frame"] * 1000
        cursor, page = request["start"], 1
        while True:
            allowance = self.history_allowance
            if allowance is not None and allowance["remaining"] < page_size:
                raise IGApiError("GET", "/prices", 403, P.HISTORY_ALLOWANCE_ERROR)
            wait = self.throttle.delay(NON_TRADING)
            if wait > self.settings.history_wait_max:
                raise TemporaryError(f"IG request allowance: no slot for {wait:.0f}s")
            time.sleep(wait)  # pacing: this thread waits, the loop does not
            body = self.rest.get(P.prices_path(request["epicBroker"], request["time_frame"], request["start"],
                                               request["end"], page_size, page), 3)
            bars = [b for b in P.price_bars(request["epic"], request["time_frame"], body)
                    if cursor <= b["date"] < request["end"]]
            self.history_allowance = P.price_allowance(body) or self.history_allowance
            number, pages = P.price_pages(body)
            last = number >= pages
            part_end = request["end"] if last else (bars[-1]["date"] + span if bars else cursor)
            self.call_soon_threadsafe(self.send_history, request["request_id"], bars, last, cursor, part_end,
                                      self.history_allowance)
            if last:
                return
            cursor, page = part_end, page + 1

    def _history_failed(self, request: dict, exc: BaseException) -> None:
        _stop_if_operational(exc)
        allowance = self.history_allowance
        if isinstance(exc, IGApiError) and exc.code == P.HISTORY_ALLOWANCE_ERROR:
            left = f"{allowance['remaining']} of {allowance['total']} points left, resets in " \
                   f"{allowance['reset_s'] / 3600:.1f} h" if allowance else "spent"
            reason = f"IG weekly historical data allowance: {left}; the rest was not fetched"
        else:
            reason = f"IG price history failed: {exc}"
        self.send_history_error(request["request_id"], reason, allowance)
        if isinstance(exc, BrokerUnavailable):
            self.connection_lost(str(exc))

    # ================================================================ orders
    def do_async_request_order_open(self, order: BaseOrder) -> None:
        """POST /positions/otc (MARKET) or /workingorders/otc (LIMIT, STOP) with our dealReference."""
        try:
            epic_broker = self._epic_of(order)
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc))
            return
        ref = P.deal_reference(order.client_order_id)
        s = self.settings
        if order.order_type == OrderType.MARKET:
            kind, path, body = OPEN_MARKET, "/positions/otc", P.open_position_body(
                order, epic_broker, ref, s.currency_code, s.expiry)
        else:
            kind, path, body = OPEN_WORKING, "/workingorders/otc", P.working_order_body(
                order, epic_broker, ref, s.currency_code, s.expiry)
        order.epicBroker = epic_broker
        self.deals.track(ref, Batch(order.client_order_id, kind))
        log.info("event=ig_deal_send account=%s order=%s ref=%s kind=%s", self.account_id,
                 order.client_order_id, ref, kind)
        self.run_blocking(self.rest.deal, "POST", path, 2, body,
                          on_result=lambda answer: self._fetch_confirm(ref),
                          on_error=lambda exc: self._deal_failed(order, ref, exc, to_worker.OrderOpen.TYPE))

    def do_async_request_order_close(self, order: BaseOrder) -> None:
        """Close IG deals in ``order.epic`` (oldest first) for ``|order.qty|``, in full or part."""
        try:
            epic_broker = self._epic_of(order)
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc), kind=to_worker.OrderClose.TYPE)
            return
        order.epicBroker = epic_broker
        self._close_ids.add(order.client_order_id)
        self.run_blocking(self._send_closes, order, epic_broker,
                          on_result=lambda refs: self._track_batch(order, CLOSE, refs),
                          on_error=lambda exc: self._deal_failed(order, "", exc, to_worker.OrderClose.TYPE))

    def do_async_request_stop_order(self, order: BaseOrder) -> None:
        """Amend stop loss / take profit of a working order, or of the positions it opened."""
        working = [d for d, cid in self.working_by_deal.items() if cid == order.client_order_id]
        self.run_blocking(self._send_amends, order, working,
                          on_result=lambda refs: self._track_batch(order, AMEND, refs),
                          on_error=lambda exc: self._deal_failed(order, "", exc, to_worker.OrderStop.TYPE))

    def do_async_request_order_cancel(self, order: BaseOrder) -> None:
        """Delete the IG working order behind ``order``."""
        deal_id = next((d for d, cid in self.working_by_deal.items() if cid == order.client_order_id), None)
        if deal_id is None:
            self.send_order_refused(order, f"order {order.client_order_id} is not a working order at IG",
                                    kind=to_worker.OrderCancel.TYPE)
            return
        self.run_blocking(self.rest.deal, "DELETE", f"/workingorders/otc/{deal_id}", 2, None,
                          on_result=lambda answer: self._track_batch(order, CANCEL, [answer.get("dealReference")]),
                          on_error=lambda exc: self._deal_failed(order, "", exc, to_worker.OrderCancel.TYPE))

    def do_async_request_order_status(self, order: BaseOrder) -> None:
        """Ask IG by the order's dealReference: GET /confirms, then the open positions.

        A bracket leg is working while a position in its instrument carries its level."""
        known = self.orders.get(order.client_order_id) or order
        if known.is_leg:
            self.orders.setdefault(known.client_order_id, known)
            self.run_blocking(self._find_leg_position, known, on_result=lambda deal: self._leg_answer(known, deal),
                              on_error=lambda exc: self.send_order_unknown(known, f"IG could not be asked: {exc}"))
            return
        if known.client_order_id in self._close_ids or known.action == OrderAction.CLOSE:
            # IG names a close's deal only in its answer: an unanswered close cannot be
            # looked up, and "not found" could make the engine close twice.
            if known.status == OrderStatus.NEW:
                self.send_order_unknown(known, "IG close deals cannot be looked up by reference; "
                                               "check the position")
            else:
                self.send_order_status(known)
            return
        ref = P.deal_reference(order.client_order_id)
        self.run_blocking(self._lookup_deal, ref,
                          on_result=lambda found: self._status_answer(known, ref, found),
                          on_error=lambda exc: self.send_order_unknown(known, f"IG could not be asked: {exc}"))

    def _leg_answer(self, leg: BaseOrder, deal_id: str) -> None:
        if not deal_id:
            self.send_order_not_found(leg)
            return
        self._bracket_deals[deal_id] = leg.parent
        leg.set_accepted(deal_id)
        self.send_order_status(leg)

    # ---------------------------------------------------------------- blocking helpers
    def _find_leg_position(self, leg: BaseOrder) -> str:
        """The dealId of the open position in ``leg``'s instrument carrying its level ('' if none)."""
        level_key = "stopLevel" if leg.leg == Leg.STOP_LOSS else "limitLevel"
        for row in (self.rest.get("/positions", 2) or {}).get("positions") or []:
            position, market = row.get("position") or {}, row.get("market") or {}
            if market.get("epic") == leg.epicBroker and position.get(level_key) == leg.price:
                return str(position.get("dealId") or "")
        return ""

    def _send_closes(self, order: BaseOrder, epic_broker: str) -> list[str]:
        try:
            positions = (self.rest.get("/positions", 2) or {}).get("positions") or []
        except TemporaryError as exc:
            raise RequestNotSent(f"IG positions could not be read ({exc}); no close was sent") from exc
        try:
            plan = P.close_plan(positions, epic_broker, order.qty)
        except ValueError as exc:
            raise InvalidOrder(str(exc)) from None
        refs = []
        for deal_id, size in plan:
            self._closing_deals.add(deal_id)  # before the DELETE: its OPU must not read as a stop
            answer = self.rest.deal("DELETE", "/positions/otc", 1, {
                "dealId": deal_id, "direction": P.direction(order.qty), "size": size,
                "orderType": "MARKET", "timeInForce": "FILL_OR_KILL"})
            refs.append(answer.get("dealReference"))
        return refs

    def _send_amends(self, order: BaseOrder, working: list[str]) -> list[str]:
        if working:
            return [self.rest.deal("PUT", f"/workingorders/otc/{deal_id}", 2, {
                "level": order.price, "type": order.order_type, "timeInForce": "GOOD_TILL_CANCELLED",
                "stopLevel": order.stop_loss, "limitLevel": order.take_profit}).get("dealReference")
                for deal_id in working]
        epic_broker = self._epic_of(order)
        positions = (self.rest.get("/positions", 2) or {}).get("positions") or []
        own = [r["position"]["dealId"] for r in positions if r["position"].get("dealId") == order.broker_ref]
        deals = own or [r["position"]["dealId"] for r in positions
                        if (r.get("market") or {}).get("epic") == epic_broker]
        if not deals:
            raise InvalidOrder(f"no open position or working order in {order.epic} to amend")
        return [self.rest.deal("PUT", f"/positions/otc/{deal_id}", 2, {
            "stopLevel": order.stop_loss, "limitLevel": order.take_profit, "trailingStop": False}
        ).get("dealReference") for deal_id in deals]

    def _get_confirm(self, ref: str) -> Optional[dict]:
        """GET /confirms/{ref} a few times; None if IG does not know the reference."""
        for attempt in range(self.settings.confirm_attempts):
            try:
                return self.rest.get(f"/confirms/{ref}")
            except IGApiError as exc:
                if exc.status != 404:
                    raise
            if attempt + 1 < self.settings.confirm_attempts:
                time.sleep(self.settings.confirm_interval)  # IG files a confirm a moment after the deal
        return None

    def _lookup_deal(self, ref: str) -> dict:
        confirm = self._get_confirm(ref)
        if confirm is not None:
            return {"confirm": confirm}
        positions = (self.rest.get("/positions", 2) or {}).get("positions") or []
        for row in positions:
            if row.get("position", {}).get("dealReference") == ref:
                return {"position": row["position"]}
        return {}

    # ---------------------------------------------------------------- on the loop
    @staticmethod
    def _epic_of(order: BaseOrder) -> str:
        return order.epicBroker  # resolved once by the engine from the account's mapping

    def _fetch_confirm(self, ref: str) -> None:
        if ref in self.deals.resolved:
            return  # the stream was faster
        self.run_blocking(self._get_confirm, ref,
                          on_result=lambda confirm: confirm and self._apply_confirm(confirm),
                          on_error=lambda exc: self._confirm_unreachable(ref, exc))

    def _confirm_unreachable(self, ref: str, exc: BaseException) -> None:
        _stop_if_operational(exc)
        log.warning("event=ig_confirm_unreachable account=%s ref=%s reason=%s", self.account_id, ref, exc)
        if isinstance(exc, BrokerUnavailable):
            self.connection_lost(str(exc))

    def _track_batch(self, order: BaseOrder, kind: str, refs: list) -> None:
        refs = [r for r in refs if r]
        batch = Batch(order.client_order_id, kind, expected=len(refs))
        if not refs:
            self._deal_failed(order, "", ProtocolError("IG answered without a dealReference"),
                              _REQUEST_OF[kind])
            return
        for ref in refs:
            early = self.deals.track(ref, batch)
            if early is not None:
                self._apply_confirm(early)
            else:
                self._fetch_confirm(ref)

    def _deal_failed(self, order: BaseOrder, ref: str, exc: BaseException, request: str) -> None:
        _stop_if_operational(exc)
        if isinstance(exc, RequestNotSent):
            reason = str(exc)
            if isinstance(exc.__cause__, BrokerUnavailable):
                self.connection_lost(str(exc.__cause__))
        elif isinstance(exc, IGApiError):
            reason = f"IG refused {request} of {order.client_order_id}: {exc.code or exc}"
        elif isinstance(exc, (InvalidOrder, ProtocolError)):
            reason = str(exc)
        elif isinstance(exc, TemporaryError) and not isinstance(exc, BrokerUnavailable):
            reason = str(exc)  # the throttle: nothing was sent
        elif ref:
            # The deal may or may not have reached IG: ask by its reference, never resend.
            log.warning("event=ig_deal_outcome_unknown account=%s order=%s ref=%s reason=%s",
                        self.account_id, order.client_order_id, ref, exc)
            self._fetch_confirm(ref)
            return
        else:
            reason = f"IG {request} of {order.client_order_id} failed: {exc}"
            if isinstance(exc, BrokerUnavailable):
                self.send_order_unknown(order, reason)
                self.connection_lost(str(exc))
                return
        if ref:
            batch = self.deals.batch_of(ref)
            if batch:
                self.deals.finish(batch)
        log.warning("event=ig_order_refused account=%s order=%s reason=%s", self.account_id,
                    order.client_order_id, reason)
        self.send_order_refused(order, reason, kind=request)

    def _apply_confirm(self, confirm: dict) -> None:
        ref = str(confirm.get("dealReference") or "")
        batch = self.deals.batch_of(ref)
        if batch is None:
            if ref and ref not in self.deals.resolved:
                self.deals.keep_orphan(ref, confirm)
            return
        if not self.deals.claim(ref):
            return
        try:
            outcome = P.confirm_outcome(confirm)
        except ProtocolError as exc:
            log.warning("event=ig_bad_confirm account=%s ref=%s reason=%s", self.account_id, ref, exc)
            self.deals.resolved.discard(ref)
            return
        batch.done.add(ref)
        odd = P.unexpected_status(batch.kind, confirm) if outcome == "ACCEPTED" else ""
        if odd:
            log.warning("event=ig_confirm_status_unexpected account=%s reason=%s", self.account_id, odd)
        order = self.orders.get(batch.client_order_id)
        if order is None:
            return
        if outcome == "REJECTED":
            batch.rejections.append(P.reject_reason(confirm))
        handler = {OPEN_MARKET: self._confirm_open, OPEN_WORKING: self._confirm_working,
                   CLOSE: self._confirm_close, AMEND: self._confirm_amend, CANCEL: self._confirm_cancel}
        handler[batch.kind](order, batch, confirm, outcome)
        if batch.complete:
            self.deals.finish(batch)

    def _confirm_open(self, order: BaseOrder, batch: Batch, confirm: dict, outcome: str) -> None:
        if outcome == "REJECTED":
            self._reject(order, batch.rejections[-1])
            return
        order.broker_ref = str(confirm.get("dealId") or "")
        if order.stop_loss is not None or order.take_profit is not None:
            self._bracket_deals[order.broker_ref] = order.client_order_id
        self._fill(order, confirm, confirm.get("size") or abs(order.qty))

    def _confirm_working(self, order: BaseOrder, batch: Batch, confirm: dict, outcome: str) -> None:
        if outcome == "REJECTED":
            self._reject(order, batch.rejections[-1])
            return
        deal_id = str(confirm.get("dealId") or "")
        if order.can_move_to(OrderStatus.ACCEPTED) and order.status != OrderStatus.ACCEPTED:
            order.set_accepted(deal_id)
            self.working_by_deal[deal_id] = order.client_order_id
            self.send_request_order_response(order)

    def _confirm_close(self, order: BaseOrder, batch: Batch, confirm: dict, outcome: str) -> None:
        if outcome == "ACCEPTED":
            self.realized_pnl += float(confirm.get("profit") or 0.0)
            order.broker_ref = order.broker_ref or str(confirm.get("dealId") or "")
            self._fill(order, confirm, confirm.get("size"))
        if batch.complete and not order.is_done:
            reason = "; ".join(batch.rejections) or "IG closed less than asked"
            if order.filled_qty:
                order.set_cancelled(f"close partly done: {reason}")
                self.send_request_order_response(order, kind=to_worker.OrderClose.TYPE)
            else:
                self._reject(order, reason)

    def _confirm_amend(self, order: BaseOrder, batch: Batch, confirm: dict, outcome: str) -> None:
        if not batch.complete:
            return
        if batch.rejections:
            self.send_order_refused(order, "; ".join(batch.rejections), kind=to_worker.OrderStop.TYPE)
        else:
            self.send_request_order_response(order, kind=to_worker.OrderStop.TYPE)

    def _confirm_cancel(self, order: BaseOrder, batch: Batch, confirm: dict, outcome: str) -> None:
        if outcome == "REJECTED":
            self.send_order_refused(order, batch.rejections[-1], kind=to_worker.OrderCancel.TYPE)
            return
        self.working_by_deal.pop(str(confirm.get("dealId") or ""), None)
        if order.can_move_to(OrderStatus.CANCELLED):
            order.set_cancelled("cancelled by request")
        self.send_request_order_response(order, kind=to_worker.OrderCancel.TYPE)

    def _working_filled(self, deal_id: str, ref: str, size, level) -> None:
        client_order_id = self.working_by_deal.pop(deal_id)
        order = self.orders.get(client_order_id)
        if order is None or order.is_done:
            return
        order.broker_ref = deal_id
        if order.stop_loss is not None or order.take_profit is not None:
            self._bracket_deals[deal_id] = order.client_order_id
        self._fill(order, {"dealReference": ref or "", "dealId": deal_id, "level": level}, size)

    def _fill(self, order: BaseOrder, confirm: dict, size) -> None:
        try:
            fill = Fill(exec_id=f"{confirm.get('dealReference')}/{confirm.get('dealId')}",
                        qty=abs(P.to_float(size, "size")), price=P.to_float(confirm.get("level"), "level"),
                        time=int(time.time() * 1000))
            self.send_request_order_response(order, fill)
        except MAOTradeError as exc:
            log.error("event=ig_fill_not_applied account=%s order=%s reason=%s", self.account_id,
                      order.client_order_id, exc)

    def _reject(self, order: BaseOrder, reason: str) -> None:
        if order.can_move_to(OrderStatus.REJECTED):
            order.set_rejected(reason)
            self.send_request_order_response(order)
        else:
            log.warning("event=ig_late_rejection account=%s order=%s status=%s reason=%s",
                        self.account_id, order.client_order_id, order.status, reason)

    def _status_answer(self, order: BaseOrder, ref: str, found: dict) -> None:
        self.orders.setdefault(order.client_order_id, order)
        if "confirm" in found:
            if self.deals.batch_of(ref) is None and ref not in self.deals.resolved:
                kind = OPEN_MARKET if order.order_type == OrderType.MARKET else OPEN_WORKING
                self.deals.track(ref, Batch(order.client_order_id, kind))
            self._apply_confirm(found["confirm"])
        elif "position" in found and not order.is_done:
            pos = found["position"]
            self._fill(order, {"dealReference": ref, "dealId": pos.get("dealId"), "level": pos.get("level")},
                       pos.get("size"))
        elif order.status == OrderStatus.NEW:
            self.send_order_not_found(order)
            return
        self.send_order_status(order)

    # ================================================================ resync
    def _resync_orders(self) -> None:
        """After (re)connecting: ask IG about every deal still waiting for its confirm,
        and check working orders that may have filled or gone while we were away."""
        for ref, batch in self.deals.pending():
            if batch.kind in (OPEN_MARKET, OPEN_WORKING):
                self._fetch_confirm(ref)
        if self.working_by_deal:
            self.run_blocking(self._fetch_book, on_result=self._reconcile_working,
                              on_error=lambda exc: log.warning("event=ig_resync_failed account=%s reason=%s",
                                                               self.account_id, exc))

    def _fetch_book(self) -> tuple[list, list]:
        positions = (self.rest.get("/positions", 2) or {}).get("positions") or []
        working = (self.rest.get("/workingorders", 2) or {}).get("workingOrders") or []
        return positions, working

    def _reconcile_working(self, book: tuple[list, list]) -> None:
        positions, working = book
        live = {(row.get("workingOrderData") or {}).get("dealId") for row in working}
        by_deal = {row["position"].get("dealId"): row["position"] for row in positions if row.get("position")}
        for deal_id, client_order_id in list(self.working_by_deal.items()):
            if deal_id in live:
                continue
            position = by_deal.get(deal_id)
            if position is not None:
                self._working_filled(deal_id, position.get("dealReference"), position.get("size"),
                                     position.get("level"))
                continue
            del self.working_by_deal[deal_id]
            order = self.orders.get(client_order_id)
            if order is not None and order.can_move_to(OrderStatus.CANCELLED) and not order.is_done:
                order.set_cancelled("working order no longer at IG")
                self.send_request_order_response(order)


def _stop_if_operational(exc: BaseException) -> None:
    # A re-login refused mid-run (password changed, key revoked) must stop the worker,
    # not be retried: raised on the loop, the base class turns it into a fatal exit.
    if isinstance(exc, OperationalError):
        raise exc


_REQUEST_OF = {OPEN_MARKET: to_worker.OrderOpen.TYPE, OPEN_WORKING: to_worker.OrderOpen.TYPE, CLOSE: to_worker.OrderClose.TYPE,
               AMEND: to_worker.OrderStop.TYPE, CANCEL: to_worker.OrderCancel.TYPE}
