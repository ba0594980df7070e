"""The ccxt Account Manager: REST through ccxt's async client, streams through ccxt pro.

Every ccxt call runs on the session's own asyncio loop (``ExchangeSession``); results hop
back onto the Account Manager's loop through ``call_soon_threadsafe``. The client order
id is sent as ``newClientOrderId`` and is the key of every lookup: an order whose answer
is lost (timeout, 5xx, ``-1007``, a dropped connection) is asked for by that id, never
sent again. Fills are keyed ``symbol:trade id``, so the user data stream, REST polls and
a restart each report a trade once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

import ccxt

from account_managers.ccxt import parsing as P
from account_managers.ccxt.config import CCXTAccountSettings, CCXTBrokerSettings
from account_managers.ccxt.session import ExchangeSession
from maotrade.account_manager import BaseAccountManager, InitResult
from maotrade.bars import BarBuilder
from maotrade.errors import BrokerUnavailable, OperationalError
from maotrade.protocol import to_worker
from maotrade.order import BaseOrder, OrderStatus, OrderType

log = logging.getLogger(__name__)


class StopWithdrawn(Exception):
    """An amend withdrew a stop and could not place it again: the order is gone."""

#: ccxt fetchMarkets types per exchange id when ``market_types`` is not given.
DEFAULT_MARKET_TYPES = {"binance": ["spot"], "binanceusdm": ["linear"]}
HISTORY_FRAMES: dict = {}
#: Errors after which an order may or may not be at the exchange: ask, never resend.
DOUBTFUL = (ccxt.RequestTimeout, ccxt.NetworkError, ccxt.ExchangeNotAvailable, ccxt.BadResponse)
ORDER_TEMPLATE = {"order_types": ["MARKET", "LIMIT", "STOP"], "time_in_force": ["GTC", "IOC", "FOK"],
                  "stop_loss": False, "take_profit": False, "partial_close": True}
FRAME_NAMES = {60: "1m", 300: "5m", 900: "15m", 3600: "1h"}
#: Exchanges that keep futures stops apart from orders (Binance's Algo Service).
ALGO_STOP_EXCHANGES = frozenset({"binanceusdm"})
#: The fetch_order parameter naming a client order id, where it is not ``origClientOrderId``.
LOOKUP_PARAM = {"aster": "clientOrderId"}
#: Stream errors that no retry mends (the installed ccxt cannot watch it): poll by REST.
STREAM_UNAVAILABLE = (ccxt.NotSupported, ccxt.ArgumentsRequired)
#: Exchanges whose ccxt client sends a boolean parameter as Python spells it ("True").
WIRE_BOOLEANS = frozenset({"aster"})
#: brokerConfig ``rate_limiter`` -> ccxt's ``rateLimiterAlgorithm``.
RATE_LIMITERS = {"rolling_window": "rollingWindow", "leaky_bucket": "leakyBucket"}


class CCXTAccountManager(BaseAccountManager):
    """A crypto exchange account (Binance spot, Binance USD-M) through ccxt."""

    settings_model = CCXTBrokerSettings
    account_settings_model = CCXTAccountSettings
    # No native brackets: the engine places stop loss and take profit as orders of their own
    # and amends them through ``do_async_request_stop_order``.
    CAPABILITIES = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": True, "amend": True,
                    "stop_amend": True, "partial_close": True, "market_data": True}

    def __init__(self, config, in_queue, out_queue):
        super().__init__(config, in_queue, out_queue)
        self.session: Optional[ExchangeSession] = None
        self.markets: dict = {}
        self.contract = False
        self.by_exchange_id: dict[str, str] = {}  # exchange order id -> client order id
        self.last_price: dict[str, float] = {}
        self.builders: dict[tuple[str, int], BarBuilder] = {}
        self.bar_symbols: dict[str, set] = {}  # symbol -> {time frame}
        self.streams_down: set[str] = set()
        self._next_poll = 0.0
        self._trade_since: dict[str, int] = {}
        self.actual_of: dict[str, str] = {}  # client id of a futures stop -> the order it placed
        self._orphans: dict[str, list] = {}  # exchange order id -> trades seen before the order
        self._replaced: set[str] = set()  # exchange ids of orders cancel-replaced by an amend
        self.price_at_exchange: dict[str, float] = {}  # client id -> limit or stop price sent
        self._probing = False  # a REST probe after a user stream dropped is under way
        self._polls_out = 0  # open-orders polls not answered yet (never more than one round)
        self._placing: set[str] = set()  # client ids whose placement the exchange has not answered
        self._amend_waiting: set[str] = set()  # ...and of those, the ones an amend waits for

    # ================================================================ lifecycle
    def on_account_manager_init(self) -> InitResult:
        """Create the ccxt client, load markets, fetch account and portfolio, start streams."""
        s, a = self.settings, self.account_settings
        self._close_session()
        self._polls_out = 0  # calls of a closed session never answer
        options = {"fetchCurrencies": False, "fetchMargins": False, "recvWindow": s.recv_window,
                   "adjustForTimeDifference": False,
                   "fetchMarkets": {"types": s.market_types or DEFAULT_MARKET_TYPES.get(s.exchange, ["spot"])},
                   "warnOnFetchOpenOrdersWithoutSymbol": False}
        client_config = {**self._credentials(), "enableRateLimit": True, "timeout": int(s.timeout * 1000),
                    "rateLimiterAlgorithm": RATE_LIMITERS[s.rate_limiter],
                    "options": {**options, **self._exchange_options(), **s.options}}
        try:
            self.session = ExchangeSession(s.exchange, client_config, s.urls, self.call_soon_threadsafe,
                                           s.rate_limit_wait_max)
        except ValueError as exc:
            raise OperationalError(f"account {self.account_id}: {exc}") from None
        try:
            self.session.open(s.testnet)
            self.markets = self.session.run(lambda c: c.load_markets())
            info, portfolio = self.session.run(self._fetch_state)
        except ccxt.AuthenticationError as exc:
            raise OperationalError(f"{s.exchange} refused the API key: {exc}") from None
        except (ccxt.NetworkError, ccxt.ExchangeError, TimeoutError) as exc:
            raise BrokerUnavailable(f"{s.exchange}: {exc}") from None
        self.contract = any(m.get("contract") for m in self.markets.values())
        self._start_user_streams()
        for symbol in self.bar_symbols:
            self._watch_market(symbol)
        self.call_soon_threadsafe(self._catch_up)
        frames = {tf: FRAME_NAMES.get(tf, f"{tf}s") for tf in s.time_frames}
        log.info("event=ccxt_connected account=%s exchange=%s markets=%d", self.account_id,
                 s.exchange, len(self.markets))
        return True, info, portfolio, ORDER_TEMPLATE, HISTORY_FRAMES, frames

    def _credentials(self) -> dict:
        """The ccxt credentials of this account, checked against what the exchange requires."""
        a, exchange = self.account_settings, self.settings.exchange
        given = {name: getattr(a, name).get_secret_value() for name in ("apiKey", "secret", "privateKey")
                 if getattr(a, name) is not None}
        exchange_class = getattr(ccxt, exchange, None)
        if exchange_class is None:  # an unknown id is refused by the session with its own message
            return given
        required = exchange_class().requiredCredentials
        missing = [name for name in ("apiKey", "secret", "privateKey") if required.get(name) and name not in given]
        if missing:
            raise OperationalError(f"account {self.account_id}: {exchange} needs accountConfig "
                                   f"{', '.join(missing)}")
        return given

    def _exchange_options(self) -> dict:
        """ccxt options this broker sets per exchange before the user's ``options``."""
        s = self.settings
        if s.exchange != "aster":
            return {}
        # ccxt's Aster client otherwise approves, and charges on every order, a builder fee
        # paid to ccxt's own address: never without the account owner's word.
        options = {"builderFee": s.builder_fee, "defaultType": "swap"}
        if s.signer_address:
            options["signerAddress"] = s.signer_address
        return options

    def on_account_manager_shutdown(self) -> None:
        """Close the streams and the client."""
        self._close_session()

    def _close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def account_manager_main(self, time_now: int) -> None:
        """Close bars whose time is over; poll by REST while a user stream is down."""
        for builder in self.builders.values():
            for bar in builder.close_due(time_now):
                self.send_realtime_data(bar)
        if self.streams_down and not self._polls_out and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.settings.poll_interval
            self._poll()

    # ================================================================ streams
    def _start_user_streams(self) -> None:
        retry = self.settings.stream_retry
        if not self.settings.user_streams:
            self.streams_down |= {"my_trades", "orders"}  # REST polling only
            return
        self.session.watch("my_trades", lambda c: c.watch_my_trades(), self._on_stream_trades,
                           self._on_stream_error, retry)
        self.session.watch("orders", lambda c: c.watch_orders(), self._on_stream_orders,
                           self._on_stream_error, retry)

    def _watch_market(self, symbol: str) -> None:
        self.session.watch(f"trades:{symbol}", lambda c: c.watch_trades(symbol), self._on_market_trades,
                           self._on_stream_error, self.settings.stream_retry)

    def _on_stream_error(self, key: str, exc: BaseException) -> None:
        log.warning("event=ccxt_stream_dropped account=%s stream=%s reason=%s", self.account_id, key, exc)
        self.streams_down.add(key)
        if isinstance(exc, STREAM_UNAVAILABLE):
            # This client cannot watch it at all: REST polling takes its place for good.
            log.warning("event=ccxt_stream_unavailable account=%s stream=%s polling_s=%s", self.account_id,
                        key, self.settings.poll_interval)
            self.session.unwatch(key)
            return
        if not key.startswith("trades:"):
            # The exchange may have dropped the listenKey with the connection: the next
            # subscription asks for a key again (Binance returns the same one while it lives).
            self.session.renew_stream_auth()
        if not key.startswith("trades:") and not self._probing and self.is_connected:
            # A user stream dropped: if REST is gone too the exchange is down, and the account
            # must show it (orders are refused, not sent into a void); else REST covers it.
            self._probing = True
            self.session.call(lambda c: c.fetch_time(), on_result=self._probe_answered,
                              on_error=self._probe_answered)

    def _probe_answered(self, result) -> None:
        self._probing = False
        if isinstance(result, ccxt.NetworkError):
            self.connection_lost(f"{self.settings.exchange} unreachable: {result}")

    def _stream_alive(self, key: str) -> None:
        if key in self.streams_down:
            self.streams_down.discard(key)
            log.info("event=ccxt_stream_resumed account=%s stream=%s", self.account_id, key)
            if not key.startswith("trades:"):
                self._catch_up()  # what happened while the stream was down comes by REST

    def _on_stream_trades(self, key: str, trades: list) -> None:
        self._stream_alive(key)
        for trade in trades:
            self._apply_trade(trade)

    def _on_stream_orders(self, key: str, orders: list) -> None:
        self._stream_alive(key)
        for raw in orders:
            self._apply_order_state(raw)

    def _on_market_trades(self, key: str, trades: list) -> None:
        self._stream_alive(key)
        for trade in trades:
            symbol = trade["symbol"]
            price = float(trade["price"])
            self.last_price[symbol] = price
            for tf in self.bar_symbols.get(symbol, ()):
                builder = self.builders[(symbol, tf)]
                for bar in builder.update(int(trade["timestamp"]), price, float(trade.get("amount") or 0)):
                    self.send_realtime_data(bar)

    # ================================================================ account
    async def _fetch_state(self, client) -> tuple[dict, dict]:
        balance = await client.fetch_balance()
        positions = await client.fetch_positions() if self.contract or self._is_contract(client) else []
        open_orders = []
        for symbol in self._symbols() or [None]:  # unmapped: one call for every symbol
            open_orders += await client.fetch_open_orders(symbol)
        info = P.account_info(balance, positions, self.account_id, self.settings.currency,
                              self.settings.balance_assets, bool(positions) or self.contract)
        if positions or self._is_contract(client):
            rows = P.normalize_positions(positions, self.to_maotrade_epic)
        else:
            rows = P.spot_positions(balance, client.markets, self._symbols(), self.to_maotrade_epic,
                                    self.last_price)
            # Spot equity is cash plus what the holdings are worth at the last trade price.
            info["equity"] += sum(r["qty"] * (r["market_price"] or 0.0) for r in rows)
        orders = [P.working_order_row(o, self.to_maotrade_epic) for o in open_orders]
        return info, {"positions": rows, "orders": orders}

    @staticmethod
    def _is_contract(client) -> bool:
        return any(m.get("contract") for m in (client.markets or {}).values())

    def _symbols(self) -> list:
        known = self.markets or (self.session.client.markets if self.session and self.session.client else {})
        return [s for s in self.epic_mapping.values() if s in known]

    def do_async_request_account_info(self) -> None:
        """Fetch balances (and positions on futures); answer with ``send_account_info``."""
        self.session.call(self._fetch_state, on_result=lambda r: self.send_account_info(r[0]),
                          on_error=self._request_failed("account info"))

    def do_async_request_portfolio(self) -> None:
        """Fetch positions (or spot holdings) and open orders; answer with ``send_portfolio``."""
        self.session.call(self._fetch_state, on_result=lambda r: self.send_portfolio(r[1]),
                          on_error=self._request_failed("portfolio"))

    def _request_failed(self, what: str):
        def failed(exc: BaseException) -> None:
            self.send_error(f"{self.settings.exchange} {what} request failed: {exc}")
            if isinstance(exc, ccxt.NetworkError):
                self.connection_lost(str(exc))
        return failed

    # ================================================================ market data
    def do_async_request_market_data(self, request: dict) -> bool:
        """Build bars of ``time_frame`` seconds from the exchange's trade stream."""
        epic = request.get("epic") or ""
        symbol = request["epicBroker"]
        time_frame = int(request.get("time_frame") or self.settings.time_frames[0])
        if symbol not in self.markets or time_frame not in self.settings.time_frames:
            return False
        frames = self.bar_symbols.setdefault(symbol, set())
        if request.get("action", "subscribe") == "unsubscribe":
            frames.discard(time_frame)
            self.builders.pop((symbol, time_frame), None)
            if not frames:
                del self.bar_symbols[symbol]
                self.session.unwatch(f"trades:{symbol}")
            return True
        self.builders.setdefault((symbol, time_frame), BarBuilder(epic or self.to_maotrade_epic(symbol), time_frame))
        if not frames:
            self._watch_market(symbol)
        frames.add(time_frame)
        return True

    # ================================================================ orders
    def _market_of(self, order: BaseOrder) -> Optional[dict]:
        symbol = order.epicBroker
        return self.markets.get(symbol)

    def do_async_request_order_open(self, order: BaseOrder) -> None:
        """Check the market's filters, then create the order with ``newClientOrderId``."""
        market = self._market_of(order)
        if market is None:
            self.send_order_refused(order, f"{order.epicBroker or order.epic} is not a market of "
                                           f"{self.settings.exchange}")
            return
        if order.stop_loss is not None or order.take_profit is not None:
            # Never drop protection silently: the engine places stop loss and take profit as
            # their own reduce-only orders for a broker without native brackets.
            self.send_order_refused(order, f"{self.settings.exchange} takes no bracket on an order; "
                                           "send stop loss and take profit as their own orders")
            return
        symbol = market["symbol"]
        if order.order_type == OrderType.MARKET and symbol not in self.last_price:
            # The minimum notional of a market order needs a price: ask for one first.
            self.session.call(lambda c: c.fetch_ticker(symbol),
                              on_result=lambda t: self._priced_then_open(order, symbol, t),
                              on_error=lambda exc: self.send_order_refused(
                                  order, f"{symbol}: no price to check the order's notional: {exc}"))
            return
        self._check_and_send(order, market)

    def _priced_then_open(self, order: BaseOrder, symbol: str, ticker: dict) -> None:
        if ticker.get("last"):
            self.last_price.setdefault(symbol, float(ticker["last"]))
        self._check_and_send(order, self.markets[symbol])

    def _check_and_send(self, order: BaseOrder, market: dict) -> None:
        P.leg_on_tick(order, market)
        problem = (P.client_id_problem(order.client_order_id)
                   or P.filter_violation(order, market, self.last_price.get(market["symbol"])))
        if not problem and order.order_type != OrderType.MARKET and order.time_in_force not in P.TIME_IN_FORCE:
            problem = f"time in force {order.time_in_force} is not offered by {self.settings.exchange}"
        if problem:
            log.info("event=ccxt_order_refused account=%s order=%s reason=%s", self.account_id,
                     order.client_order_id, problem)
            self.send_order_refused(order, problem)
            return
        args = P.order_request(order, market, self.settings.exchange in WIRE_BOOLEANS)
        order.epicBroker = market["symbol"]
        self.price_at_exchange[order.client_order_id] = order.price
        self._placing.add(order.client_order_id)
        log.info("event=ccxt_order_send account=%s order=%s symbol=%s type=%s qty=%s", self.account_id,
                 order.client_order_id, market["symbol"], order.order_type, order.qty)
        self.session.call(lambda c: c.create_order(*args), retry_reads=False,
                          on_result=lambda raw: self._order_answered(order, raw),
                          on_error=lambda exc: self._order_failed(order, exc, to_worker.OrderOpen.TYPE))

    def do_async_request_order_close(self, order: BaseOrder) -> None:
        """Close by an opposite order (reduce-only on futures)."""
        order.action = "close"
        self.do_async_request_order_open(order)

    def do_async_request_order_cancel(self, order: BaseOrder) -> None:
        """Cancel by client order id (``origClientOrderId``)."""
        symbol = order.epicBroker
        params = {"origClientOrderId": order.client_order_id,
                  **({"trigger": True} if self._conditional(order) else {})}
        self.price_at_exchange.pop(order.client_order_id, None)
        self.session.call(lambda c: c.cancel_order(None, symbol, params),
                          retry_reads=False,
                          on_result=lambda raw: self._cancel_answered(order, raw),
                          on_error=lambda exc: self._cancel_failed(order, exc))

    def do_async_request_stop_order(self, order: BaseOrder) -> None:
        """Amend a working order: move a LIMIT's price or a STOP's trigger.

        Spot cancel-replaces (one request, ``STOP_ON_FAILURE``); USD-M modifies a limit in
        place and withdraws and places again a stop (its Algo Service has no amend). The
        replacement keeps the client order id (Binance needs it unique among open orders
        only) and the quantity still to fill; the replaced order's cancel report is not the
        order's end. An order whose price did not change (its stop loss / take profit are
        the engine's legs) is answered at once.
        """
        if order.client_order_id in self._placing:
            # Amended before the exchange answered its placement: moved once it has.
            self._amend_waiting.add(order.client_order_id)
            return
        market = self._market_of(order)
        movable = order.order_type in (OrderType.LIMIT, OrderType.STOP)
        if not movable or order.is_done or market is None or not order.broker_ref:
            self.send_order_refused(order, f"{self.settings.exchange}: only a working LIMIT or STOP order "
                                           f"can be amended ({order.client_order_id} is {order.status} "
                                           f"{order.order_type})", kind=to_worker.OrderStop.TYPE)
            return
        P.leg_on_tick(order, market)
        if self.price_at_exchange.get(order.client_order_id) == order.price:
            self.send_request_order_response(order, kind=to_worker.OrderStop.TYPE)
            return
        problem = P.filter_violation(order, market, self.last_price.get(market["symbol"]))
        if problem:
            self.send_order_refused(order, problem, kind=to_worker.OrderStop.TYPE)
            return
        log.info("event=ccxt_order_amend account=%s order=%s type=%s price=%s", self.account_id,
                 order.client_order_id, order.order_type, order.price)
        if self._conditional(order) or not self.session.client.has.get("editOrder"):
            self._replaced.add(order.broker_ref)
            self.session.call(self._replace_conditional, order, market, retry_reads=False,
                              on_result=lambda raw: self._amended(order, raw),
                              on_error=lambda exc: self._amend_failed(order, exc))
            return
        symbol, side = market["symbol"], "buy" if order.qty > 0 else "sell"
        kind = "limit" if order.order_type == OrderType.LIMIT else "market"
        price = order.price if order.order_type == OrderType.LIMIT else None
        if market.get("contract"):
            amount = abs(order.qty)
            params = {"origClientOrderId": order.client_order_id}
        else:
            amount = abs(order.remaining_qty)
            params = {"newClientOrderId": order.client_order_id,
                      "cancelOrigClientOrderId": order.client_order_id}
            if order.order_type == OrderType.LIMIT:
                params["timeInForce"] = P.TIME_IN_FORCE.get(order.time_in_force, "GTC")
            else:
                params["stopPrice"] = order.price  # a market stop: STOP_LOSS at this trigger
            self._replaced.add(order.broker_ref)
        self.session.call(lambda c: c.edit_order(order.broker_ref, symbol, kind, side, amount, price, params),
                          retry_reads=False, on_result=lambda raw: self._amended(order, raw),
                          on_error=lambda exc: self._amend_failed(order, exc))

    async def _replace_conditional(self, client, order: BaseOrder, market: dict) -> dict:
        """Withdraw an order and place it again at its new price, same client id (a USD-M stop,
        or any order where the exchange has no amend)."""
        symbol = market["symbol"]
        await client.cancel_order(None, symbol, {"origClientOrderId": order.client_order_id,
                                                 **({"trigger": True} if self._conditional(order) else {})})
        symbol, kind, side, _, price, params = P.order_request(order, market, self.settings.exchange in WIRE_BOOLEANS)
        try:
            return await client.create_order(symbol, kind, side, abs(order.remaining_qty), price, params)
        except Exception as exc:
            raise StopWithdrawn(f"the stop was withdrawn but not placed again: {exc}") from exc

    def _amend_failed(self, order: BaseOrder, exc: BaseException) -> None:
        self._replaced.discard(order.broker_ref)
        self.send_order_refused(order, f"{self.settings.exchange} amend of {order.client_order_id} failed: {exc}",
                                kind=to_worker.OrderStop.TYPE)
        if isinstance(exc, StopWithdrawn) and not order.is_done:
            # Never leave the engine believing a stop works that the exchange no longer holds.
            log.error("event=ccxt_stop_withdrawn account=%s order=%s reason=%s", self.account_id,
                      order.client_order_id, exc)
            order.set_cancelled("withdrawn by an amend that could not place it again")
            self.send_request_order_response(order)

    def _amended(self, order: BaseOrder, raw: dict) -> None:
        new_id = str(raw.get("id") or "")
        if new_id:
            self.by_exchange_id[new_id] = order.client_order_id
            order.broker_ref = new_id
        self.price_at_exchange[order.client_order_id] = order.price
        self.send_request_order_response(order, kind=to_worker.OrderStop.TYPE)
        self._apply_order_state(raw)

    def do_async_request_order_status(self, order: BaseOrder) -> None:
        """Ask the exchange for the order by client order id, with all its trades."""
        symbol = order.epicBroker
        self.orders.setdefault(order.client_order_id, order)
        self.session.call(self._lookup, symbol, order.client_order_id, self._conditional(order),
                          on_result=lambda found: self._status_answer(order, found),
                          on_error=lambda exc: self.send_order_unknown(
                              order, f"{self.settings.exchange} could not be asked: {exc}"))

    def _conditional(self, order: BaseOrder) -> bool:
        """True for a futures stop Binance keeps in its Algo Service, apart from orders."""
        if self.settings.exchange not in ALGO_STOP_EXCHANGES:
            return False
        market = self.markets.get(order.epicBroker) or {}
        return order.order_type == OrderType.STOP and bool(market.get("contract"))

    async def _lookup(self, client, symbol: str, client_id: str, conditional: bool = False) -> Optional[tuple]:
        params = {LOOKUP_PARAM.get(self.settings.exchange, "origClientOrderId"): client_id,
                  **({"trigger": True} if conditional else {})}
        try:
            raw = await client.fetch_order(None, symbol, params)
        except ccxt.OrderNotFound:
            return None
        placed = str((raw.get("info") or {}).get("actualOrderId") or "") if conditional else str(raw["id"])
        trades = await client.fetch_my_trades(symbol, None, None, {"orderId": placed}) if placed else []
        return raw, trades

    # ---------------------------------------------------------------- answers
    def _order_answered(self, order: BaseOrder, raw: dict) -> None:
        self.by_exchange_id[str(raw.get("id"))] = order.client_order_id
        if order.status == OrderStatus.NEW:
            order.set_accepted(str(raw.get("id") or ""))
            self.send_request_order_response(order)
        for trade in raw.get("trades") or []:
            if trade.get("id") is not None:
                self._apply_trade({**trade, "symbol": trade.get("symbol") or order.epicBroker}, order)
        self._apply_order_state(raw)
        self._placement_settled(order)

    def _placement_settled(self, order: BaseOrder) -> None:
        """The exchange answered a placement: an amend that waited for it goes now."""
        self._placing.discard(order.client_order_id)
        if order.client_order_id in self._amend_waiting:
            self._amend_waiting.discard(order.client_order_id)
            self.do_async_request_stop_order(order)

    def _order_failed(self, order: BaseOrder, exc: BaseException, kind: str) -> None:
        if isinstance(exc, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
            # Binance does not process a request it answers 429/418: the order was not placed.
            reason = f"{self.settings.exchange} rate limit hit; order not placed: {exc}"
        elif isinstance(exc, DOUBTFUL) or "-1007" in str(exc):
            log.warning("event=ccxt_order_outcome_unknown account=%s order=%s reason=%s",
                        self.account_id, order.client_order_id, exc)
            self.session.call(self._delayed_lookup, order,
                              on_result=lambda found: (self._doubt_resolved(order, found),
                                                       self._placement_settled(order)),
                              on_error=lambda e: (self.send_order_unknown(
                                  order, f"outcome unknown after {exc}; lookup failed: {e}"),
                                  self._placement_settled(order)))
            return
        else:
            reason = f"{self.settings.exchange} refused {order.client_order_id}: {exc}"
        log.warning("event=ccxt_order_rejected account=%s order=%s reason=%s", self.account_id,
                    order.client_order_id, reason)
        if order.can_move_to(OrderStatus.REJECTED):
            order.set_rejected(reason)
            self.send_request_order_response(order, kind=kind)
        else:
            self.send_order_refused(order, reason, kind=kind)
        self._placement_settled(order)

    async def _delayed_lookup(self, client, order: BaseOrder):
        await asyncio.sleep(self.settings.status_delay)
        return await self._lookup(client, order.epicBroker, order.client_order_id, self._conditional(order))

    def _doubt_resolved(self, order: BaseOrder, found: Optional[tuple]) -> None:
        if found is None:
            self.send_order_unknown(order, "not found at the exchange yet after a doubtful answer")
            return
        raw, trades = found
        self._order_answered_quietly(order, raw, trades)
        self.send_request_order_response(order)

    def _status_answer(self, order: BaseOrder, found: Optional[tuple]) -> None:
        if found is None:
            self.send_order_not_found(order)
            return
        raw, trades = found
        self._order_answered_quietly(order, raw, trades)
        self.send_order_status(order)

    def _order_answered_quietly(self, order: BaseOrder, raw: dict, trades: list) -> None:
        self.by_exchange_id[str(raw.get("id"))] = order.client_order_id
        self.price_at_exchange.setdefault(order.client_order_id, order.price)
        if order.status == OrderStatus.NEW and raw.get("status") in ("open", "closed", "canceled"):
            order.set_accepted(str(raw.get("id") or ""))
        for trade in trades:
            fill = P.trade_fill(trade)
            if not any(f["exec_id"] == fill.exec_id for f in order.fills):
                order.add_fill(fill)
                self.send_request_order_response(order, fill)
        self._apply_order_state(raw)

    def _cancel_answered(self, order: BaseOrder, raw: dict) -> None:
        if self._fills_missing(order, raw):
            self._fetch_trades_of(order, then=lambda: self._finish_cancel(order))
        else:
            self._finish_cancel(order)

    @staticmethod
    def _fills_missing(order: BaseOrder, raw: dict) -> bool:
        """True if the exchange reports more filled than the fills ``order`` holds (or cannot say)."""
        filled = raw.get("filled")
        return filled is None or abs(order.filled_qty) < float(filled) - 1e-12

    def _finish_cancel(self, order: BaseOrder) -> None:
        if order.can_move_to(OrderStatus.CANCELLED) and not order.is_done:
            order.set_cancelled("cancelled by request")
        self.send_request_order_response(order, kind=to_worker.OrderCancel.TYPE)

    def _cancel_failed(self, order: BaseOrder, exc: BaseException) -> None:
        self.send_order_refused(order, f"{self.settings.exchange} cancel of {order.client_order_id} "
                                       f"failed: {exc}", kind=to_worker.OrderCancel.TYPE)

    def _fetch_trades_of(self, order: BaseOrder, then=None) -> None:
        ref = self.actual_of.get(order.client_order_id) or ("" if self._conditional(order) else order.broker_ref)
        symbol = order.epicBroker

        async def fetch(client):
            return await client.fetch_my_trades(symbol, None, None, {"orderId": ref}) if ref else []

        def apply(trades):
            for trade in trades:
                self._apply_trade(trade, order)
            if then:
                then()
        self.session.call(fetch, on_result=apply,
                          on_error=lambda exc: (log.warning("event=ccxt_trades_fetch_failed account=%s "
                                                            "order=%s reason=%s", self.account_id,
                                                            order.client_order_id, exc),
                                                then and then()))

    # ---------------------------------------------------------------- events
    def _order_of(self, exchange_id: str, client_id: str) -> Optional[BaseOrder]:
        key = client_id or self.by_exchange_id.get(str(exchange_id), "")
        return self.orders.get(key)

    def _apply_trade(self, trade: dict, order: Optional[BaseOrder] = None) -> None:
        order = order or self._order_of(trade.get("order"), P.trade_client_id(trade))
        symbol = trade.get("symbol") or ""
        self._trade_since[symbol] = max(self._trade_since.get(symbol, 0), int(trade.get("timestamp") or 0))
        if order is None:
            # A trade of an order not known yet (a futures stop's placed order, before the
            # stop's own update names it): kept until the order is known.
            exchange_id = str(trade.get("order") or "")
            if exchange_id and len(self._orphans) < 1000:
                self._orphans.setdefault(exchange_id, []).append(trade)
            return
        if order.is_done:
            return
        fill = P.trade_fill(trade)
        if any(f["exec_id"] == fill.exec_id for f in order.fills):
            return  # a replay of a trade already counted
        try:
            self.send_request_order_response(order, fill)
        except Exception as exc:  # a fill the order cannot take is logged, never half-applied
            log.error("event=ccxt_fill_not_applied account=%s order=%s exec_id=%s reason=%s",
                      self.account_id, order.client_order_id, fill.exec_id, exc)

    def _apply_order_state(self, raw: dict) -> None:
        order = self._order_of(raw.get("id"), raw.get("clientOrderId") or "")
        if order is None or str(raw.get("id")) in self._replaced:
            return
        if order.broker_ref and str(raw.get("id") or order.broker_ref) != order.broker_ref \
                and not (raw.get("info") or {}).get("aid") and raw.get("status") != "open":
            return  # the end of an order this one replaced
        self.by_exchange_id[str(raw.get("id"))] = order.client_order_id
        info = raw.get("info") or {}
        placed = str(info.get("ai") or info.get("actualOrderId") or "")
        if placed:
            self.actual_of[order.client_order_id] = placed
            self.by_exchange_id[placed] = order.client_order_id
            for trade in self._orphans.pop(placed, []):
                self._apply_trade(trade, order)
        status = P.CCXT_STATUS.get(raw.get("status") or "")
        if status == "ACCEPTED" and order.status == OrderStatus.NEW:
            order.set_accepted(str(raw.get("id") or ""))
            self.send_request_order_response(order)
        elif status in ("CANCELLED", "EXPIRED") and not order.is_done:
            order.broker_ref = order.broker_ref or str(raw.get("id") or "")
            if self._fills_missing(order, raw):
                self._fetch_trades_of(order, then=lambda: self._end(order, status))
            else:
                self._end(order, status)
        elif status == "REJECTED" and order.can_move_to(OrderStatus.REJECTED):
            order.set_rejected(f"{self.settings.exchange} rejected the order")
            self.send_request_order_response(order)
        elif status == "FILLED" and not order.is_done and raw.get("filled"):
            order.broker_ref = order.broker_ref or str(raw.get("id") or "")
            if self._fills_missing(order, raw):
                # The trades normally follow on the stream at once; REST only for what it missed
                # (every REST call spends the exchange's request weight and queues the next ones).
                self.session.after(self.settings.status_delay, lambda: self._trades_still_missing(order, raw))

    def _trades_still_missing(self, order: BaseOrder, raw: dict) -> None:
        if not order.is_done and self._fills_missing(order, raw):
            self._fetch_trades_of(order)

    def _end(self, order: BaseOrder, status: str) -> None:
        if order.is_done:
            return
        if status == "CANCELLED":
            order.set_cancelled("cancelled at the exchange")
        else:
            order.set_expired("expired at the exchange")
        self.send_request_order_response(order)

    def _active_orders(self) -> list:
        return [o for o in self.orders.values() if not o.is_done and o.status != OrderStatus.NEW and o.epicBroker]

    def _catch_up(self) -> None:
        """Ask by REST for the trades and states of every order still working here."""
        for order in self._active_orders():
            self._look_up(order)

    def _look_up(self, order: BaseOrder) -> None:
        self.session.call(self._lookup, order.epicBroker, order.client_order_id, self._conditional(order),
                          on_result=lambda found: found and self._order_answered_quietly(order, *found),
                          on_error=self._rest_failed)

    def _poll(self) -> None:
        """While a user stream is down: one open-orders request per market, and a lookup of
        only the orders it shows ended or further filled (REST weight is the exchange's
        limit, and ccxt's limiter would hold every request, orders too, once it is spent).
        A network failure here means the exchange is gone."""
        for symbol in self._symbols():
            self._polls_out += 1
            self.session.call(lambda c, symbol=symbol: c.fetch_open_orders(symbol),
                              on_result=lambda rows, symbol=symbol: self._polled(symbol, rows),
                              on_error=self._poll_failed)

    def _polled(self, symbol: str, rows: list) -> None:
        self._polls_out = max(0, self._polls_out - 1)
        working = {str(r.get("clientOrderId") or ""): r for r in rows}
        for order in self._active_orders():
            row = working.get(order.client_order_id)
            if order.epicBroker == symbol and (row is None or self._fills_missing(order, row)):
                self._look_up(order)

    def _poll_failed(self, exc: BaseException) -> None:
        self._polls_out = max(0, self._polls_out - 1)
        self._rest_failed(exc)

    def _rest_failed(self, exc: BaseException) -> None:
        log.warning("event=ccxt_catch_up_failed account=%s reason=%s", self.account_id, exc)
        if isinstance(exc, ccxt.NetworkError) and self.is_connected:
            self.connection_lost(f"{self.settings.exchange} unreachable: {exc}")
