"""The Zerodha Kite Connect Account Manager: REST (``KiteConnect``) for the session,
orders, account and portfolio; ``KiteTicker`` for ticks and order updates.

Every REST call runs through ``run_blocking`` behind the client-side rate limits; every
ticker callback hops to the loop with ``call_soon_threadsafe``. An order travels under a
20-character tag derived from its client order id (kept in the account's store), so an
order whose answer was lost is found at Kite by its tag, never sent again. Fills are
Kite's trades, keyed by trade id. An expired access token suspends the account until a
new one arrives (``maotrade admin account kite-login``), without a restart.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

from kiteconnect import KiteConnect

from account_managers.kite import parsing as P
from account_managers.kite import session
from account_managers.kite.config import KiteAccountSettings, KiteBrokerSettings
from account_managers.kite.hours import MarketHours
from account_managers.kite.instruments import InstrumentCache
from account_managers.kite.store import KiteStore
from account_managers.kite.streaming import CLOSED, GAVE_UP, OPEN, KiteStream
from account_managers.kite.throttle import HISTORICAL, ORDERS, OTHER, QUOTES, RateLimiter
from maotrade.account_manager import BaseAccountManager, InitResult, now_ms
from maotrade.bars import BarBuilder
from maotrade.config import parse_settings
from maotrade.errors import (AuthenticationError, BrokerUnavailable, InvalidOrder, MAOTradeError,
                             OperationalError, ProtocolError, TemporaryError)
from maotrade.log import register_secret
from maotrade.protocol import to_worker
from maotrade.order import BaseOrder, OrderStatus

log = logging.getLogger(__name__)

ORDER_TEMPLATE = {"order_types": ["MARKET", "LIMIT", "STOP"], "time_in_force": ["DAY", "IOC", "GTC"],
                  "stop_loss": False, "take_profit": False, "partial_close": True}


class KiteAccountManager(BaseAccountManager):
    """Zerodha Kite Connect (v3) through the official kiteconnect library."""

    settings_model = KiteBrokerSettings
    account_settings_model = KiteAccountSettings
    CAPABILITIES = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": True, "stop_amend": True,
                    "amend": True, "partial_close": True, "market_data": True, "bracket": False,
                    "history": True}

    def __init__(self, config, in_queue, out_queue, clock: Callable[[], float] = time.time):
        super().__init__(config, in_queue, out_queue)
        s, a = self.settings, self.account_settings
        self.kite = KiteConnect(a.api_key, root=s.api_root, timeout=s.timeout)
        self.limiter = RateLimiter({ORDERS: s.orders_per_second, HISTORICAL: s.historical_per_second,
                                    QUOTES: s.quotes_per_second, OTHER: s.requests_per_second})
        self.hours = MarketHours(s.market_open, s.market_close, s.market_timezone, s.trading_days,
                                 s.holidays, clock=clock)
        self.data_dir = Path(self.runtime.get("data_dir") or ".")
        self.token_file = session.token_path(self.data_dir, self.account_id)
        self.instrument_cache = InstrumentCache(self.data_dir / "kite" / "instruments.json", s.api_root,
                                                s.instruments_cache_hours)
        self.store: Optional[KiteStore] = None
        self.stream: Optional[KiteStream] = None
        self._generation = 0
        self.instruments: dict[str, dict] = {}
        self.epic_of_token: dict[int, str] = {}
        self.builders: dict[tuple[str, int], BarBuilder] = {}
        self._day_volume: dict[int, float] = {}
        self._refused_tokens: set[str] = set()
        self._expired = False
        self._awaiting_login = False
        self._ticker_up = False
        self._next_poll = 0.0
        self._catching_up = False

    # ================================================================ lifecycle
    def on_account_manager_init(self) -> InitResult:
        """Find a live access token, load instruments, account and portfolio, open the ticker."""
        self._close_stream()
        if self.store is None:
            self.store = KiteStore(self.data_dir / "kite" / f"account-{self.account_id}.sqlite")
            self.orders.update(self.store.load_orders())
        token = self._login()
        self._awaiting_login = False
        try:
            self._load_instruments()
            info = self._fetch_account_info()
            portfolio = self._fetch_portfolio()
        except P.TokenExpired as exc:
            self._refused_tokens.add(token)
            raise TemporaryError(f"{exc}; {self._login_hint()}") from exc
        self._open_stream(token)
        self._expired = False
        self.call_soon_threadsafe(self._catch_up)
        log.info("event=kite_connected account=%s instruments=%d positions=%d", self.account_id,
                 len(self.instruments), len(portfolio["positions"]))
        return True, info, portfolio, ORDER_TEMPLATE, P.HISTORY_FRAMES, P.DATA_FRAMES

    def on_account_manager_shutdown(self) -> None:
        """Close the ticker and the store."""
        self._close_stream()
        if self.store is not None:
            self.store.close()
            self.store = None

    def account_manager_main(self, time_now: int) -> None:
        """Poll orders while the ticker is down; complete bars whose time is over."""
        if not self._ticker_up and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.settings.poll_interval
            self._catch_up()
        for builder in self.builders.values():
            for bar in builder.close_due(time_now):
                self.send_realtime_data(bar)

    # ================================================================ session
    def _login_hint(self) -> str:
        return f"token expired: run maotrade admin account kite-login {self.account_id} --request-token …"

    def _candidate_tokens(self) -> list[str]:
        handed_over = session.read_token(self.token_file, self.account_settings.api_secret)
        if handed_over:
            register_secret(handed_over)  # a new token is as secret as the configured one
        tokens = [t for t in (handed_over, self.account_settings.access_token) if t]
        return [t for i, t in enumerate(tokens) if t not in tokens[:i] and t not in self._refused_tokens]

    def _login(self) -> str:
        """Return the first candidate token Kite accepts (blocking; init only)."""
        for token in self._candidate_tokens():
            if self._token_works(token):
                self.kite.set_access_token(token)
                return token
            self._refused_tokens.add(token)
        if not self._awaiting_login:
            self._awaiting_login = True
            self.send_error(self._login_hint())
        raise TemporaryError(self._login_hint())

    def reconnect_delay(self, attempt: int) -> float:
        """Back off as usual, but look for a new token often while waiting for a login
        (a look costs no request: a refused token is never tried again)."""
        if self._awaiting_login:
            return self.settings.token_check_interval
        return super().reconnect_delay(attempt)

    def do_reconnect(self) -> bool:
        """Reconnect; waiting for a person to log in does not use up reconnect attempts."""
        ok = super().do_reconnect()
        if not ok and self._awaiting_login:
            self._reconnect_attempt = 0  # the broker is fine; only the daily login is missing
        return ok

    def _token_works(self, token: str) -> bool:
        client = KiteConnect(self.account_settings.api_key, access_token=token, root=self.settings.api_root,
                             timeout=self.settings.timeout)
        try:
            profile = self._call(OTHER, "Kite profile", client.profile)
        except P.TokenExpired:
            return False
        wanted = self.account_settings.user_id
        if wanted and profile.get("user_id") != wanted:
            raise AuthenticationError(f"Kite token belongs to user {profile.get('user_id')}, "
                                        f"account {self.account_id} is user {wanted}")
        return True

    def _token_expired(self, reason: str) -> None:
        """Suspend trading until a new token arrives; never retry the dead one."""
        if self._expired:
            return
        self._expired = True
        if self.kite.access_token:
            self._refused_tokens.add(self.kite.access_token)
        self._close_stream()
        log.warning("event=kite_token_expired account=%s reason=%s", self.account_id, reason)
        self.connection_suspended(self._login_hint())
        self._schedule_token_check()

    def _schedule_token_check(self) -> None:
        timer = threading.Timer(self.settings.token_check_interval,
                                lambda: self.call_soon_threadsafe(self._check_new_token))
        timer.daemon = True
        timer.start()

    def _check_new_token(self) -> None:
        if not self._expired or not self._running:
            return
        tokens = self._candidate_tokens()
        if not tokens:
            self._schedule_token_check()
            return
        token, stream = tokens[0], self._new_stream(tokens[0])
        self.run_blocking(self._resume_with, token, stream, on_result=lambda _: self._resumed(token, stream),
                          on_error=lambda exc: self._resume_failed(token, stream, exc))

    def _resume_with(self, token: str, stream: KiteStream) -> None:
        """Check the new token and open the ticker with it (blocking; off the loop)."""
        if not self._token_works(token):
            raise P.TokenExpired("the new Kite token was refused too")
        self._start_stream(stream)

    def _resumed(self, token: str, stream: KiteStream) -> None:
        self._expired = False
        self.kite.set_access_token(token)
        self.stream, self._ticker_up = stream, True
        log.info("event=kite_token_renewed account=%s", self.account_id)
        self._catch_up(then=lambda: self.connection_resumed("new Kite access token"))

    def _resume_failed(self, token: str, stream: KiteStream, exc: BaseException) -> None:
        stream.close()
        if isinstance(exc, P.TokenExpired):
            self._refused_tokens.add(token)
        elif isinstance(exc, OperationalError):
            raise exc  # another user's session: a person must fix it, on the loop this stops the worker
        log.warning("event=kite_token_resume_failed account=%s reason=%s", self.account_id, exc)
        self._schedule_token_check()

    # ================================================================ REST plumbing
    def _call(self, kind: str, what: str, fn: Callable, *args, **kwargs):
        """Take a rate-limit slot, make one Kite call, translate its failure (blocking)."""
        with self.limiter.slot(kind, self.settings.rate_limit_wait):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # everything the library raises is translated at this boundary
                raise P.translate_error(exc, what) from exc

    def _background_failed(self, what: str):
        def failed(exc: BaseException) -> None:
            self._catching_up = False
            self._handle_failure(exc, what)
        return failed

    def _handle_failure(self, exc: BaseException, what: str) -> None:
        if isinstance(exc, P.TokenExpired):
            self._token_expired(str(exc))
        elif isinstance(exc, BrokerUnavailable) and self.is_connected:
            self.connection_lost(str(exc))
        else:
            log.warning("event=kite_request_failed account=%s what=%s reason=%s", self.account_id, what, exc)

    # ================================================================ instruments and ticker
    def _load_instruments(self) -> None:
        self.instruments = self.instrument_cache.load(
            lambda: self._call(OTHER, "Kite instruments", self.kite.instruments))
        self.epic_of_token = {v["token"]: k for k, v in self.instruments.items()}

    def _open_stream(self, token: str) -> None:
        """Open the ticker with ``token`` (blocking; init only)."""
        stream = self._new_stream(token)
        self._start_stream(stream)
        self.stream, self._ticker_up = stream, True

    def _new_stream(self, token: str) -> KiteStream:
        """A ticker session for ``token``, not yet connected; older sessions' callbacks are dropped."""
        s = self.settings
        self._close_stream()
        self._generation += 1
        generation = self._generation
        stream = KiteStream(
            self.account_settings.api_key, token, s.ticker_root, s.tick_mode,
            on_ticks=lambda ticks: self.call_soon_threadsafe(self._on_ticks, generation, ticks),
            on_order_update=lambda data: self.call_soon_threadsafe(self._on_order_update, generation, data),
            on_state=lambda state, detail: self.call_soon_threadsafe(self._on_ticker_state, generation,
                                                                     state, detail),
            max_delay=s.ticker_max_delay, max_tries=s.ticker_max_tries, connect_timeout=s.ticker_connect_timeout)
        stream.wanted = {self.instruments[e]["token"] for e, _ in self.builders if e in self.instruments}
        return stream

    def _start_stream(self, stream: KiteStream) -> None:
        s = self.settings
        if not stream.start(s.ticker_connect_timeout):
            stream.close()
            raise BrokerUnavailable(f"KiteTicker at {s.ticker_root}: not open within {s.ticker_connect_timeout:g}s")

    def _close_stream(self) -> None:
        if self.stream is not None:
            self._generation += 1
            self.stream.close()
            self.stream = None
        self._ticker_up = False

    def _on_ticker_state(self, generation: int, state: str, detail: str) -> None:
        if generation != self._generation:
            return
        log.log(logging.INFO if state == OPEN else logging.WARNING, "event=kite_ticker account=%s state=%s detail=%s",
                self.account_id, state, detail)
        if state == OPEN:
            was_down = not self._ticker_up
            self._ticker_up = True
            if was_down:
                self._catch_up()  # order updates sent while it was down are lost: ask REST
        elif state == CLOSED:
            self._ticker_up = False
            self._next_poll = time.monotonic() + self.settings.poll_interval
        elif state == GAVE_UP and self.is_connected:
            self._close_stream()
            self.connection_lost(detail)

    def _on_ticks(self, generation: int, ticks: list) -> None:
        if generation != self._generation:
            return
        for tick in ticks:
            epic_broker = self.epic_of_token.get(tick.get("instrument_token"))
            parsed = P.tick_price(tick)
            if epic_broker is None or parsed is None:
                continue
            price, day_volume, when = parsed
            token = tick["instrument_token"]
            previous = self._day_volume.get(token)
            self._day_volume[token] = day_volume
            volume = day_volume - previous if previous is not None and day_volume >= previous else 0.0
            stamp = when or now_ms()
            for (epic, _), builder in self.builders.items():
                if epic != epic_broker:
                    continue
                for bar in builder.update(stamp, price, volume):
                    self.send_realtime_data(bar)
                self.send_realtime_data(dict(builder.current))

    # ================================================================ account
    def do_async_request_account_info(self) -> None:
        """Margins (every segment) and the P&L of net positions."""
        self.run_blocking(self._fetch_account_info, on_result=self.send_account_info,
                          on_error=self._request_failed("account info"))

    def do_async_request_portfolio(self) -> None:
        """Net positions plus holdings, and Kite's open orders."""
        self.run_blocking(self._fetch_portfolio_rows,
                          on_result=lambda rows: self.send_portfolio(self._normalize_portfolio(*rows)),
                          on_error=self._request_failed("portfolio"))

    def _fetch_account_info(self) -> dict:
        margins = self._call(OTHER, "Kite margins", self.kite.margins)
        positions = self._call(OTHER, "Kite positions", self.kite.positions)
        return P.account_info(self.account_id, margins, positions)

    def _fetch_portfolio(self) -> dict:
        return self._normalize_portfolio(*self._fetch_portfolio_rows())

    def _fetch_portfolio_rows(self) -> tuple[dict, list, list]:
        return (self._call(OTHER, "Kite positions", self.kite.positions),
                self._call(OTHER, "Kite holdings", self.kite.holdings),
                self._call(OTHER, "Kite orders", self.kite.orders))

    def _normalize_portfolio(self, positions: dict, holdings: list, orders: list) -> dict:
        # On the loop: the tag lookup reads the store, which only the loop thread touches.
        return {"positions": P.portfolio_positions(positions, holdings, self.to_maotrade_epic),
                "orders": P.working_orders(orders, self.store.owner_of_tag, self.to_maotrade_epic)}

    def _request_failed(self, what: str):
        def failed(exc: BaseException) -> None:
            self.send_error(f"Kite {what} request failed: {exc}")
            self._handle_failure(exc, what)
        return failed

    def do_async_request_history(self, request: dict) -> None:
        """Page through Kite's historical API off the loop (3 requests/s); one part per page."""
        try:
            interval = P.history_interval(request["time_frame"])
            if request["epicBroker"] not in self.instruments:
                raise InvalidOrder(f"unknown instrument {request['epicBroker']!r}: not in Kite's instruments dump")
        except InvalidOrder as exc:
            self.send_history_error(request["request_id"], str(exc))
            return
        self.run_blocking(self._download_history, request, interval,
                          on_error=lambda exc: self._history_failed(request, exc))

    def _download_history(self, request: dict, interval: str) -> None:
        """Runs on a worker thread; hands each page to the loop as one part."""
        pages = P.history_pages(request["start"], request["end"], interval)
        for index, (start, end) in enumerate(pages):
            bars = [b for b in self.fetch_history(request["epic"], request["epicBroker"], request["time_frame"],
                                                  start, end) if request["start"] <= b["date"] < request["end"]]
            span_start = request["start"] if index == 0 else P.to_epoch_ms(start)
            span_end = request["end"] if index == len(pages) - 1 else P.to_epoch_ms(end)
            self.call_soon_threadsafe(self.send_history, request["request_id"], bars, index == len(pages) - 1,
                                      span_start, span_end)

    def _history_failed(self, request: dict, exc: BaseException) -> None:
        self.send_history_error(request["request_id"], str(exc))
        if isinstance(exc, P.TokenExpired):
            self._token_expired(str(exc))

    def fetch_history(self, epic: str, epic_broker: str, time_frame: int, start: dt.datetime,
                      end: dt.datetime) -> list[dict]:
        """Candles of one page of Kite's historical API as normalized bars (blocking)."""
        interval = P.history_interval(time_frame)
        if epic_broker not in self.instruments:
            raise InvalidOrder(f"unknown instrument {epic_broker!r}: not in Kite's instruments dump")
        rows = self._call(HISTORICAL, f"Kite historical {epic_broker}", self.kite.historical_data,
                          self.instruments[epic_broker]["token"], start, end, interval)
        return P.candles_to_bars(epic, time_frame, rows)

    # ================================================================ market data
    def do_async_request_market_data(self, request: dict) -> bool:
        """Subscribe (quote/full mode) or unsubscribe an instrument's ticks, built into bars."""
        epic = request.get("epic") or ""
        epic_broker = request["epicBroker"]
        try:
            time_frame = int(request.get("time_frame", 0))
        except (TypeError, ValueError):
            raise InvalidOrder(f"time_frame {request.get('time_frame')!r} is not a number of seconds") from None
        if time_frame <= 0:
            raise InvalidOrder(f"time frame {time_frame}s: bars from ticks need a positive number of seconds")
        instrument = self.instruments.get(epic_broker)
        if instrument is None:
            raise InvalidOrder(f"unknown instrument {epic_broker!r}: not in Kite's instruments dump")
        key = (epic_broker, time_frame)
        action = request.get("action", "subscribe")
        if action == "unsubscribe":
            if self.builders.pop(key, None) is None:
                return False
            if self.stream is not None and not any(e == epic_broker for e, _ in self.builders):
                self.stream.unsubscribe({instrument["token"]})
            return True
        if action != "subscribe":
            raise InvalidOrder(f"market data action {action!r} is neither subscribe nor unsubscribe")
        if key not in self.builders:
            self.builders[key] = BarBuilder(epic or self.to_maotrade_epic(epic_broker), time_frame)
        if self.stream is not None:
            self.stream.subscribe({instrument["token"]})
        return True

    # ================================================================ orders
    def do_async_request_order_open(self, order: BaseOrder) -> None:
        """Place the order under its tag (regular, or AMO outside hours if configured)."""
        self._place(order, to_worker.OrderOpen.TYPE)

    def do_async_request_order_close(self, order: BaseOrder) -> None:
        """Reduce the position by an opposite order in the same product."""
        self._place(order, to_worker.OrderClose.TYPE)

    def _place(self, order: BaseOrder, request: str) -> None:
        try:
            if order.stop_loss is not None or order.take_profit is not None:
                # Never drop a protective stop silently: without native brackets the
                # engine places the legs itself, as separate close orders.
                raise InvalidOrder(f"order {order.client_order_id}: Kite has no brackets (capability bracket "
                                   "is False); stop loss and take profit go as separate close orders")
            epic_broker = order.epicBroker
            variety = self._variety_now(order)
            params = P.order_params(order, epic_broker, self.settings.products.get(epic_broker, self.settings.product),
                                    variety, self.settings.stop_limit_offset, self._tick_size(epic_broker))
            recorded = self.store.owner_of_tag(params["tag"]) == order.client_order_id
            if not recorded:
                self.store.link_tag(params["tag"], order.client_order_id, variety)
        except (InvalidOrder, ValueError) as exc:
            self._refuse(order, str(exc), request)
            return
        order.epicBroker = epic_broker
        if recorded:
            # An earlier worker process recorded this order and may have placed it: Kite's
            # order book decides. Found there, it is answered from there, never placed twice.
            log.warning("event=kite_duplicate_open account=%s order=%s", self.account_id, order.client_order_id)
            self.run_blocking(self._lookup, params["tag"],
                              on_result=lambda found: self._place_unless_at_kite(order, params, request, found),
                              on_error=lambda exc: self.send_order_unknown(order, f"Kite could not be asked: {exc}"))
            return
        self._send_place(order, params, request)

    def _place_unless_at_kite(self, order: BaseOrder, params: dict, request: str,
                              found: tuple[Optional[dict], list]) -> None:
        if found[0] is not None:
            self._status_answer(self.orders.setdefault(order.client_order_id, order), found)
            return
        # Recorded by a worker that died before its request reached Kite: not a repeat.
        log.warning("event=kite_recorded_open_not_at_kite account=%s order=%s tag=%s", self.account_id,
                    order.client_order_id, params["tag"])
        self.store.link_tag(params["tag"], order.client_order_id, params["variety"])
        self._send_place(order, params, request)

    def _send_place(self, order: BaseOrder, params: dict, request: str) -> None:
        self.orders[order.client_order_id] = order
        self.store.save_order(order)
        log.info("event=kite_order_send account=%s order=%s tag=%s variety=%s type=%s", self.account_id,
                 order.client_order_id, params["tag"], params["variety"], params["order_type"])
        self.run_blocking(partial(self._call, ORDERS, f"Kite place {order.client_order_id}", self.kite.place_order,
                                  **params),
                          on_result=lambda order_id: self._placed(order, params["tag"], order_id),
                          on_error=lambda exc: self._place_failed(order, exc, request))

    def _tick_size(self, epic_broker: str) -> float:
        """The instrument's tick size from the instruments dump (Kite's equity tick if absent)."""
        return (self.instruments.get(epic_broker) or {}).get("tick_size") or 0.05

    def _variety_now(self, order: BaseOrder) -> str:
        closed = self.hours.closed_reason()
        if not closed:
            return "regular"
        if self.settings.outside_hours == "amo":
            return "amo"
        raise InvalidOrder(f"order {order.client_order_id} not sent: {closed}; set brokerConfig "
                           f"outside_hours to 'amo' to send after-market orders")

    def _placed(self, order: BaseOrder, tag: str, order_id: str) -> None:
        self.store.set_order_id(tag, order_id)
        if order.status == OrderStatus.NEW:
            order.set_submitted(order_id)
            self.send_request_order_response(order)
        else:
            order.broker_ref = order.broker_ref or str(order_id)  # the ticker was faster
        self.store.save_order(order)

    def _place_failed(self, order: BaseOrder, exc: BaseException, request: str) -> None:
        if isinstance(exc, P.TokenExpired):
            # Kite checks the session before anything else: the order was not placed.
            self._refuse(order, f"order {order.client_order_id} not placed: {self._login_hint()}", request)
            self._token_expired(str(exc))
        elif isinstance(exc, BrokerUnavailable):
            # It may or may not have reached Kite: find it by its tag, never send it again.
            log.warning("event=kite_order_outcome_unknown account=%s order=%s reason=%s", self.account_id,
                        order.client_order_id, exc)
            self.send_order_unknown(order, f"{exc}; Kite will be asked for tag {P.tag_for(order.client_order_id)}")
            self._catch_up()
        else:
            # InvalidOrder (Kite's InputException/OrderException) or a rate-limit refusal: not placed.
            self._refuse(order, str(exc), request)

    def _refuse(self, order: BaseOrder, reason: str, request: str) -> None:
        log.warning("event=kite_order_refused account=%s order=%s reason=%s", self.account_id,
                    order.client_order_id, reason)
        self.send_order_refused(order, reason, kind=request)
        if self.store is not None and order.client_order_id in self.orders:
            self.store.save_order(order)

    def do_async_request_order_cancel(self, order: BaseOrder) -> None:
        """Cancel a working order by its Kite order id."""
        if not order.broker_ref:
            self.send_order_refused(order, f"order {order.client_order_id} has no Kite order id yet", kind=to_worker.OrderCancel.TYPE)
            return
        variety = self.store.variety_of(order.client_order_id)
        self.run_blocking(partial(self._call, ORDERS, f"Kite cancel {order.client_order_id}", self.kite.cancel_order,
                                  variety, order.broker_ref),
                          on_result=lambda _: self._catch_up_if_ticker_down(),
                          on_error=lambda exc: self._amend_failed(order, exc, to_worker.OrderCancel.TYPE))

    def do_async_request_stop_order(self, order: BaseOrder) -> None:
        """Amend the price (LIMIT) or trigger (STOP) of a working order.

        Kite keeps no stop loss or take profit on a position: the engine places those as
        separate orders (``bracket`` is False), and amends them through this call.
        """
        working = order.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED) and order.broker_ref
        try:
            if not working:
                raise InvalidOrder(f"order {order.client_order_id} is not working at Kite ({order.status}); "
                                   "Kite has no stops on positions: amend the engine's stop-loss or take-profit order")
            changes = P.modify_params(order, self._tick_size(order.epicBroker))
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc), kind=to_worker.OrderStop.TYPE)
            return
        variety = self.store.variety_of(order.client_order_id)
        self.run_blocking(partial(self._call, ORDERS, f"Kite modify {order.client_order_id}", self.kite.modify_order,
                                  variety, order.broker_ref, **changes),
                          on_result=lambda _: self._amended(order),
                          on_error=lambda exc: self._amend_failed(order, exc, to_worker.OrderStop.TYPE))

    def _amended(self, order: BaseOrder) -> None:
        self.store.save_order(order)
        self.send_request_order_response(order, kind=to_worker.OrderStop.TYPE)

    def _amend_failed(self, order: BaseOrder, exc: BaseException, request: str) -> None:
        self.send_order_refused(order, str(exc), kind=request)
        if isinstance(exc, P.TokenExpired):
            self._token_expired(str(exc))

    def _catch_up_if_ticker_down(self) -> None:
        if not self._ticker_up:
            self._catch_up()

    def do_async_request_order_status(self, order: BaseOrder) -> None:
        """Find the order at Kite by its tag: its state and every trade, or not found."""
        known = self.orders.setdefault(order.client_order_id, order)
        self.run_blocking(self._lookup, P.tag_for(order.client_order_id),
                          on_result=lambda found: self._status_answer(known, found),
                          on_error=lambda exc: self.send_order_unknown(known, f"Kite could not be asked: {exc}"))

    def _lookup(self, tag: str) -> tuple[Optional[dict], list]:
        rows = [r for r in self._call(OTHER, "Kite orders", self.kite.orders) if r.get("tag") == tag]
        if not rows:
            return None, []
        row = rows[-1]
        trades = self._call(OTHER, "Kite order trades", self.kite.order_trades, row["order_id"]) \
            if row.get("filled_quantity") else []
        return row, trades

    def _status_answer(self, order: BaseOrder, found: tuple[Optional[dict], list]) -> None:
        row, trades = found
        if row is None:
            self.send_order_not_found(order)
            return
        self._apply(order, row, trades)
        self.send_order_status(order)

    # ================================================================ order updates
    def _on_order_update(self, generation: int, row: dict) -> None:
        if generation != self._generation:
            return
        order = self._order_of(row)
        if order is None:
            return
        try:
            filled = int(row.get("filled_quantity") or 0)
        except (TypeError, ValueError):
            filled = 0
        if filled > abs(order.filled_qty):
            # The update says how much, Kite's trades say which: fetch them, keyed by trade id.
            self.run_blocking(partial(self._call, OTHER, "Kite order trades", self.kite.order_trades,
                                      row["order_id"]),
                              on_result=lambda trades: self._apply(order, row, trades),
                              on_error=self._background_failed("order trades"))
        else:
            self._apply(order, row, [])

    def _order_of(self, row: dict) -> Optional[BaseOrder]:
        owner = self.store.owner_of_tag(row.get("tag") or "") or self.store.owner_of_order_id(row.get("order_id") or "")
        return self.orders.get(owner) if owner else None

    def _catch_up(self, then: Optional[Callable[[], None]] = None) -> None:
        """Ask REST for orders and trades (after a reconnect, while the ticker is down)."""
        if self._catching_up and then is None:
            return
        self._catching_up = True

        def fetch():
            return (self._call(OTHER, "Kite orders", self.kite.orders),
                    self._call(OTHER, "Kite trades", self.kite.trades))

        def apply(result):
            self._catching_up = False
            rows, trades = result
            by_order: dict[str, list] = {}
            for trade in trades:
                by_order.setdefault(str(trade.get("order_id")), []).append(trade)
            for row in rows:
                order = self._order_of(row)
                if order is not None:
                                self._apply(order, row, by_order.get(str(row.get("order_id")), []))
            if then is not None:
                then()

        self.run_blocking(fetch, on_result=apply, on_error=self._background_failed("catch-up"))

    def _apply(self, order: BaseOrder, row: dict, trades: list) -> None:
        """Bring ``order`` up to Kite's row and trades; report each change once."""
        order_id = str(row.get("order_id") or "")
        if order_id and not order.broker_ref:
            order.broker_ref = order_id
            self.store.set_order_id(P.tag_for(order.client_order_id), order_id)
        try:
            target = P.kite_status(row)
        except ProtocolError as exc:
            log.warning("event=kite_bad_update account=%s reason=%s", self.account_id, exc)
            return
        for trade in trades:
            self._apply_trade(order, trade)
        if order.is_done:
            self.store.save_order(order)
            return
        if target == OrderStatus.SUBMITTED and order.status == OrderStatus.NEW:
            order.set_submitted(order_id)
        elif target == OrderStatus.ACCEPTED and order.status in (OrderStatus.NEW, OrderStatus.SUBMITTED):
            order.set_accepted(order_id)
        elif target == OrderStatus.REJECTED and order.can_move_to(OrderStatus.REJECTED):
            order.set_rejected(f"Kite rejected: {row.get('status_message') or 'no reason given'}")
        elif target == OrderStatus.CANCELLED and order.can_move_to(OrderStatus.CANCELLED):
            order.set_cancelled(row.get("status_message") or "cancelled at Kite")
        else:
            return  # no change (a repeat, or COMPLETE whose trades are still on their way)
        self.store.save_order(order)
        self.send_request_order_response(order)

    def _apply_trade(self, order: BaseOrder, trade: dict) -> None:
        try:
            fill = P.fill_from_trade(trade)
        except ProtocolError as exc:
            log.warning("event=kite_bad_trade account=%s order=%s reason=%s", self.account_id,
                        order.client_order_id, exc)
            return
        if any(f["exec_id"] == fill.exec_id for f in order.fills):
            return  # Kite (or the ticker) said it before: counted once
        try:
            order.add_fill(fill)
        except MAOTradeError as exc:
            log.error("event=kite_fill_not_applied account=%s order=%s trade=%s reason=%s", self.account_id,
                      order.client_order_id, fill.exec_id, exc)
            return
        self.store.save_order(order)
        self.send_request_order_response(order, fill)

    # ================================================================ daily login
    @classmethod
    def login_with_request_token(cls, document: dict, request_token: str, data_dirs: Sequence[Path]) -> dict:
        """Exchange a request token for today's session of the account ``document`` describes.

        Called by ``maotrade admin account kite-login`` with the decrypted document. Leaves
        the access token sealed in the account's token file under each of ``data_dirs``
        (the engines' data dirs) for a running worker, and returns the session
        (``access_token``, ``user_id``, ...).
        """
        account = str(document["idAccount"])
        broker = parse_settings(cls.settings_model, document.get("brokerConfig") or {},
                                f"account {account} brokerConfig")
        config = {k: v for k, v in (document.get("accountConfig") or {}).items()
                  if k in cls.account_settings_model.model_fields}
        settings = parse_settings(cls.account_settings_model, config, f"account {account} accountConfig")
        if not request_token or not request_token.strip():
            raise AuthenticationError("request token is empty")
        answer = session.exchange_request_token(broker.api_root, settings.api_key, settings.api_secret,
                                                request_token.strip(), broker.timeout)
        if settings.user_id and answer.get("user_id") != settings.user_id:
            raise AuthenticationError(f"Kite logged in user {answer.get('user_id')}, but account {account} "
                                      f"is user {settings.user_id}")
        for data_dir in data_dirs:
            session.write_token(session.token_path(Path(data_dir), account), settings.api_secret,
                                answer["access_token"])
        return answer
