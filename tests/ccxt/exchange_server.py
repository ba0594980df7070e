"""A local exchange that speaks Binance's wire protocol, for the real ccxt to trade against.

One ``ExchangeServer`` plays one venue: ``spot`` (Binance spot: ``/api/v3`` REST, the
WebSocket API at ``/ws-api/v3`` for the user data stream through
``userDataStream.subscribe.signature``, market streams at ``/ws/<n>``) or ``usdm``
(Binance USD-M futures: ``/fapi/v1..v3`` REST, a listenKey from ``POST /fapi/v1/listenKey``
and the user data stream at ``/private/ws?listenKey=``, market streams at
``/public/ws/<n>`` and ``/market/ws/<n>``).

Signed requests are checked as Binance checks them: ``X-MBX-APIKEY`` header, HMAC-SHA256
of the query string (GET, DELETE) or body (POST, PUT) in ``signature``, ``timestamp``
within ``recvWindow`` of the server clock (``-1021`` otherwise). Orders are matched
against a last price set by the test (``set_price``); every change is pushed on the user
data stream as Binance pushes it (``executionReport`` / ``ORDER_TRADE_UPDATE``).

The server's own record (``orders``, ``trades``, ``balances``, ``positions``,
``order_posts``) is what tests compare the Account Manager's view against. Faults are
armed by methods (``fail_next``, ``partial_next``, ``duplicate_reports``,
``drop_streams``). Binds 127.0.0.1 on a free port; ``stop`` (or the context manager)
ends it.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

SPOT, USDM, ASTER = "spot", "usdm", "aster"
#: Venues a server can play (Aster's futures API is Binance USD-M's, signed otherwise: aster_server.py).
VENUES = (SPOT, USDM, ASTER)

#: Filters of the one market each test server lists, as Binance publishes them.
MARKET_RULES = {"tick": "0.10", "step": "0.00010", "min_qty": "0.00010", "max_qty": "9000",
                "min_notional": "10"}


def _dec(value) -> Decimal:
    return Decimal(str(value))


def _fmt(value) -> str:
    return format(_dec(value).normalize(), "f")


@dataclass
class Fault:
    """One armed failure: answer ``status`` (with ``body`` and ``headers``) to the next
    request matching ``method`` and ``path``; ``after`` processes the request first."""

    method: str
    path: str
    status: int
    body: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    after: bool = False
    raw: str = ""  # sent as the body instead of ``body`` (malformed data)


@dataclass
class Order:
    """An order on the server's book, with Binance's fields."""

    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    qty: Decimal
    price: Decimal
    stop_price: Decimal
    time_in_force: str
    reduce_only: bool
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    quote: Decimal = Decimal(0)
    time: int = 0
    update: int = 0

    @property
    def avg(self) -> Decimal:
        return self.quote / self.executed if self.executed else Decimal(0)


class ExchangeServer:
    """A Binance spot or USD-M venue on 127.0.0.1 with one market (BTCUSDT)."""

    def __init__(self, venue: str = SPOT, api_key: str = "test-api-key-1234",
                 secret: str = "test-secret-abcdef", price: float = 50000.0,
                 balances: Optional[dict] = None, leverage: int = 10):
        if venue not in VENUES:
            raise ValueError(f"venue must be one of {', '.join(VENUES)}, got {venue!r}")
        self.venue = venue
        self.api_key, self.secret = api_key, secret
        self.symbol = "BTCUSDT"
        self.price = _dec(price)
        self.leverage = leverage
        self.balances = {k: _dec(v) for k, v in (balances or (
            {"USDT": 10000, "BTC": 0} if venue == SPOT else {"USDT": 10000})).items()}
        self.position_qty = Decimal(0)
        self.entry_price = Decimal(0)
        self.realized = Decimal(0)
        self.orders: dict[int, Order] = {}
        self.algos: dict[int, dict] = {}  # USD-M conditional orders (the Algo Service)
        self.trades: list[dict] = []
        self.order_posts: dict[str, int] = {}  # client order id -> POSTs received
        self.replacements: dict[str, int] = {}  # client order id -> cancel-replaces received
        self.requests: list[tuple[str, str, float]] = []
        self.clock_offset_ms = 0
        self._faults: list[Fault] = []
        self._last_trade_report: dict[str, dict] = {}
        self._partial: list[Decimal] = []
        self.duplicate_reports = False
        self._ids = itertools.count(1001)
        self._trade_ids = itertools.count(50001)
        self._market_trade_ids = itertools.count(900001)
        self._lock = threading.RLock()
        self._user_sockets: set = set()
        self._market_sockets: dict = {}  # ws -> set of stream names
        self.listen_keys: set[str] = set()
        self.user_subscriptions = 0
        self.down = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None
        self._walk_stop: Optional[threading.Event] = None
        self.port = 0

    # ================================================================ lifecycle
    def start(self) -> "ExchangeServer":
        """Start serving on a free 127.0.0.1 port; return self once it accepts connections."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                        name=f"exchange-{self.venue}")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("exchange server did not start within 10s")
        return self

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        """Close every socket and stop the server thread."""
        if self._loop is None:
            return
        if self._walk_stop is not None:
            self._walk_stop.set()
        async def close_all():
            for ws in list(self._user_sockets) + list(self._market_sockets):
                await ws.close()
        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> "ExchangeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def urls(self) -> dict:
        """The ``urls`` brokerConfig value that points ccxt's Binance client here."""
        http, ws = self.base, f"ws://127.0.0.1:{self.port}"
        if self.venue == SPOT:
            return {"public": f"{http}/api/v3", "private": f"{http}/api/v3",
                    "v1": f"{http}/api/v1",
                    "ws": {"spot": f"{ws}/ws", "ws-api": {"spot": f"{ws}/ws-api/v3"}}}
        return {"fapiPublic": f"{http}/fapi/v1", "fapiPublicV2": f"{http}/fapi/v2",
                "fapiPublicV3": f"{http}/fapi/v3", "fapiPrivate": f"{http}/fapi/v1",
                "fapiPrivateV2": f"{http}/fapi/v2", "fapiPrivateV3": f"{http}/fapi/v3",
                "fapiData": f"{http}/futures/data",
                "ws": {"linear": f"{ws}/ws", "ws-api": {"linear": f"{ws}/ws-fapi/v1"}}}

    # ================================================================ test controls
    def fail_next(self, method: str, path: str, status: int, code: int = 0, msg: str = "",
                  headers: Optional[dict] = None, after: bool = False) -> None:
        """Answer the next ``method path`` (path ends with, e.g. ``/order``) with ``status``."""
        body = {"code": code, "msg": msg} if code else {}
        with self._lock:
            self._faults.append(Fault(method, path, status, body, dict(headers or {}), after))

    def garble_next(self, method: str, path: str, text: str) -> None:
        """Answer the next ``method path`` 200 with ``text`` as its body (malformed JSON, say)."""
        with self._lock:
            self._faults.append(Fault(method, path, 200, raw=text))

    def partial_next(self, *fractions: float) -> None:
        """Fill the next crossing orders in these fractions of their quantity, one per price move."""
        with self._lock:
            self._partial = [_dec(f) for f in fractions]

    def set_price(self, price: float, qty: float = 0.01) -> None:
        """Move the last price: publish a market trade and match resting orders."""
        with self._lock:
            self.price = _dec(price)
            now = self.now_ms()
            self._publish_market(*self._market_trade(now, _dec(qty)))
            for order in list(self.orders.values()):
                if order.status in ("NEW", "PARTIALLY_FILLED"):
                    self._match(order)
            for algo in list(self.algos.values()):
                if algo["algoStatus"] == "NEW":
                    self._maybe_trigger(algo)

    def _market_trade(self, now: int, qty: Decimal) -> tuple[str, dict]:
        """The market stream name and event of one trade at the last price."""
        event = {"e": "trade", "E": now, "s": self.symbol, "t": next(self._market_trade_ids),
                 "p": _fmt(self.price), "q": _fmt(qty), "T": now, "m": False, "M": True}
        if self.venue != SPOT:
            event["X"] = "MARKET"
        return f"{self.symbol.lower()}@trade", event

    def start_walk(self, interval: float = 0.1, step: float = 0.0008, seed: int = 7) -> None:
        """Move the price by a seeded random walk every ``interval`` seconds (for live runs)."""
        import random
        rng = random.Random(seed)
        stop = self._walk_stop = threading.Event()

        def walk():
            while not stop.wait(interval):
                tick = _dec(MARKET_RULES["tick"])
                moved = self.price * (1 + _dec(rng.gauss(0, step)))
                self.set_price(float(max(tick, (moved / tick).to_integral_value() * tick)))
        threading.Thread(target=walk, daemon=True, name="exchange-walk").start()

    def record(self) -> dict:
        """The exchange's own record: balances, position, orders and trades."""
        with self._lock:
            return {"venue": self.venue, "price": float(self.price),
                    "balances": {a: float(v) for a, v in self.balances.items()},
                    "position": {"qty": float(self.position_qty), "entry_price": float(self.entry_price),
                                 "realized_pnl": float(self.realized)} if self.venue != SPOT else None,
                    "orders": [{"client_order_id": o.client_id, "orderId": o.order_id, "side": o.side,
                                "type": o.type, "qty": float(o.qty), "executed": float(o.executed),
                                "avg_price": float(o.avg), "status": o.status, "reduce_only": o.reduce_only}
                               for o in self.orders.values()],
                    "algo_orders": [dict(a) for a in self.algos.values()],
                    "trades": [{"id": t["id"], "orderId": t["orderId"], "client_order_id": t["client_id"],
                                "side": t["side"], "qty": float(t["qty"]), "price": float(t["price"])}
                               for t in self.trades],
                    "order_posts": dict(self.order_posts)}

    def fill_order(self, client_id: str, qty: float) -> None:
        """Fill ``qty`` of the resting order ``client_id`` at its price (or the last price)."""
        with self._lock:
            order = next(o for o in self.orders.values() if o.client_id == client_id
                         and o.status in ("NEW", "PARTIALLY_FILLED"))
            self._execute(order, min(_dec(qty), order.qty - order.executed), order.price or self.price)

    def repeat_fill(self, client_id: str) -> None:
        """Push the newest execution report with a trade of ``client_id`` again, same trade id."""
        with self._lock:
            self._publish_user(self._last_trade_report[client_id])

    def send_garbage(self) -> None:
        """Put a malformed frame on every user data stream."""
        for ws in list(self._user_sockets):
            self._loop.call_soon_threadsafe(asyncio.ensure_future, _send(ws, '{"e": "executionReport", "s": '))

    def go_down(self) -> None:
        """Stop listening and drop every connection: the exchange is unreachable."""
        async def down():
            for ws in list(self._user_sockets) + list(self._market_sockets):
                await ws.close(code=1006)
            await self._site.stop()
            # Kept-alive HTTP connections go too: nothing gets through while down.
            for connection in list(self._runner.server.connections):
                connection.force_close()
        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self.down = True

    def come_back(self) -> None:
        """Listen again on the same port (after ``go_down``), orders and balances kept."""
        async def up():
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await self._site.start()
        asyncio.run_coroutine_threadsafe(up(), self._loop).result(10)
        self.down = False

    def restart(self) -> None:
        """Drop every connection and forget every listenKey, keeping the book."""
        with self._lock:
            self.listen_keys.clear()
        self.drop_streams()

    def drop_streams(self) -> None:
        """Close every websocket connection, as a network drop would."""
        async def close_all():
            for ws in list(self._user_sockets) + list(self._market_sockets):
                await ws.close(code=1006)
        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(5)

    def now_ms(self) -> int:
        """The server's clock in epoch milliseconds."""
        return int(time.time() * 1000) + self.clock_offset_ms

    def order_by_client_id(self, client_id: str) -> Optional[Order]:
        """The server's newest order with this client order id (a cancel-replace reuses it), if any."""
        with self._lock:
            return max((o for o in self.orders.values() if o.client_id == client_id),
                       key=lambda o: o.order_id, default=None)

    def algo_by_client_id(self, client_id: str) -> Optional[dict]:
        """The newest USD-M conditional order with this ``clientAlgoId``, if any."""
        with self._lock:
            return max((a for a in self.algos.values() if a["clientAlgoId"] == client_id),
                       key=lambda a: a["algoId"], default=None)

    def working_level(self, client_id: str) -> Optional[float]:
        """The price a working order (or conditional) ``client_id`` waits for: its stop
        price for a stop, its limit price for a limit; None when none is working."""
        with self._lock:
            algo = self.algo_by_client_id(client_id)
            if algo is not None and algo["algoStatus"] == "NEW":
                return float(algo["triggerPrice"])
            order = self.order_by_client_id(client_id)
            if order is None or order.status not in ("NEW", "PARTIALLY_FILLED"):
                return None
            return float(order.stop_price or order.price)

    def user_stream_open(self) -> bool:
        """True while some client holds a user data stream."""
        with self._lock:
            return bool(self._user_sockets)

    def streams_subscribed(self) -> set:
        """Names of the market streams some client subscribes to now."""
        with self._lock:
            return set().union(*self._market_sockets.values()) if self._market_sockets else set()

    # ================================================================ HTTP
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        body = await request.text()
        with self._lock:
            self.requests.append((request.method, path, time.monotonic()))
            fault = next((f for f in self._faults if f.method == request.method
                          and path.endswith(f.path)), None)
            if fault is not None:
                self._faults.remove(fault)
        if fault is not None and fault.raw:
            return web.Response(text=fault.raw, status=fault.status, content_type="application/json")
        if fault is not None and not fault.after:
            return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        params = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
        params.update(dict(parse_qsl(body, keep_blank_values=True)))
        name = path.rsplit("/", 1)[-1]
        handler = self._route(request.method, path, name)
        if handler is None:
            return _error(404, -1, f"no endpoint {request.method} {path}")
        if handler in self._signed_handlers():
            refusal = self._check_signature(request, body)
            if refusal is not None:
                return refusal
        with self._lock:
            response = handler(params)
        if fault is not None:
            return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        return response

    def _route(self, method: str, path: str, name: str):
        prefix = "/api/v3/" if self.venue == SPOT else "/fapi/"
        if not path.startswith(prefix):
            return None
        table = {
            ("GET", "ping"): lambda p: web.json_response({}),
            ("GET", "time"): lambda p: web.json_response({"serverTime": self.now_ms()}),
            ("GET", "exchangeInfo"): self._exchange_info,
            ("GET", "24hr"): self._ticker,
            ("GET", "account"): self._account,
            ("GET", "balance"): self._futures_balance,
            ("GET", "positionRisk"): self._position_risk,
            ("POST", "order"): self._new_order,
            ("GET", "order"): self._query_order,
            ("DELETE", "order"): self._cancel_order,
            ("PUT", "order"): self._modify_order,
            ("POST", "cancelReplace"): self._cancel_replace,
            ("GET", "openOrders"): self._open_orders,
            ("GET", "myTrades"): self._my_trades,
            ("GET", "userTrades"): self._my_trades,
            ("GET", "leverageBracket"): self._leverage_bracket,
            ("POST", "algoOrder"): self._new_algo,
            ("GET", "algoOrder"): self._query_algo,
            ("DELETE", "algoOrder"): self._cancel_algo,
            ("GET", "openAlgoOrders"): self._open_algos,
            ("POST", "listenKey"): self._new_listen_key,
            ("PUT", "listenKey"): lambda p: web.json_response({}),
        }
        return table.get((method, name))

    def _signed_handlers(self):
        return {self._modify_order, self._cancel_replace,
                self._account, self._futures_balance, self._position_risk, self._leverage_bracket,
                self._new_algo, self._query_algo, self._cancel_algo, self._open_algos, self._new_order,
                self._query_order, self._cancel_order, self._open_orders, self._my_trades}

    def _check_signature(self, request: web.Request, body: str) -> Optional[web.Response]:
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        payload = _signed_payload(request, body)
        signed, _, signature = payload.rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if not signed or not hmac.compare_digest(signature, expected):
            return _error(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(signed))
        window = int(params.get("recvWindow", 5000))
        stamp = int(params.get("timestamp", 0))
        if not (stamp < self.now_ms() + 1000 and self.now_ms() - stamp <= window):
            return _error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return None

    # ---------------------------------------------------------------- market info
    def _exchange_info(self, params: dict) -> web.Response:
        r = MARKET_RULES
        filters = [{"filterType": "PRICE_FILTER", "minPrice": r["tick"], "maxPrice": "1000000",
                    "tickSize": r["tick"]},
                   {"filterType": "LOT_SIZE", "minQty": r["min_qty"], "maxQty": r["max_qty"],
                    "stepSize": r["step"]},
                   {"filterType": "MARKET_LOT_SIZE", "minQty": r["min_qty"], "maxQty": r["max_qty"],
                    "stepSize": r["step"]}]
        symbol = {"symbol": self.symbol, "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
                  "orderTypes": ["LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                                 "TAKE_PROFIT_LIMIT", "LIMIT_MAKER"]}
        if self.venue == SPOT:
            filters.append({"filterType": "NOTIONAL", "minNotional": r["min_notional"],
                            "applyMinToMarket": True, "maxNotional": "9000000", "avgPriceMins": 5})
            symbol.update({"baseAssetPrecision": 8, "quoteAssetPrecision": 8, "quotePrecision": 8,
                           "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                           "permissions": [], "permissionSets": [["SPOT"]], "ocoAllowed": True,
                           "quoteOrderQtyMarketAllowed": True, "cancelReplaceAllowed": True})
        else:
            filters.append({"filterType": "MIN_NOTIONAL", "notional": r["min_notional"]})
            symbol.update({"pair": self.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                           "onboardDate": 1569398400000, "marginAsset": "USDT", "pricePrecision": 1,
                           "quantityPrecision": 4, "baseAssetPrecision": 8, "quotePrecision": 8,
                           "underlyingType": "COIN", "settlePlan": 0, "triggerProtect": "0.0500",
                           "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                                          "TAKE_PROFIT_MARKET"],
                           "timeInForce": ["GTC", "IOC", "FOK", "GTX"]})
        symbol["filters"] = filters
        return web.json_response({"timezone": "UTC", "serverTime": self.now_ms(), "rateLimits": [],
                                  "exchangeFilters": [], "symbols": [symbol]})

    def _ticker(self, params: dict) -> web.Response:
        last, now = _fmt(self.price), self.now_ms()
        return web.json_response({"symbol": self.symbol, "priceChange": "0", "priceChangePercent": "0",
                                  "weightedAvgPrice": last, "lastPrice": last, "lastQty": "0",
                                  "bidPrice": last, "askPrice": last, "openPrice": last, "highPrice": last,
                                  "lowPrice": last, "volume": "0", "quoteVolume": "0",
                                  "openTime": now - 86400000, "closeTime": now, "count": 0})

    # ---------------------------------------------------------------- account
    def _account(self, params: dict) -> web.Response:
        if self.venue == SPOT:
            locked = self._locked()
            return web.json_response({
                "makerCommission": 0, "takerCommission": 0, "canTrade": True, "canWithdraw": True,
                "canDeposit": True, "updateTime": self.now_ms(), "accountType": "SPOT",
                "balances": [{"asset": a, "free": _fmt(v - locked.get(a, 0)), "locked": _fmt(locked.get(a, 0))}
                             for a, v in self.balances.items()], "permissions": ["SPOT"]})
        wallet = self.balances["USDT"]
        upnl = self._unrealized()
        margin = self._position_margin()
        return web.json_response({
            "totalWalletBalance": _fmt(wallet), "totalUnrealizedProfit": _fmt(upnl),
            "totalMarginBalance": _fmt(wallet + upnl), "totalPositionInitialMargin": _fmt(margin),
            "totalInitialMargin": _fmt(margin), "availableBalance": _fmt(wallet + upnl - margin),
            "maxWithdrawAmount": _fmt(wallet + upnl - margin),
            "assets": [{"asset": "USDT", "walletBalance": _fmt(wallet), "unrealizedProfit": _fmt(upnl),
                        "marginBalance": _fmt(wallet + upnl), "initialMargin": _fmt(margin),
                        "positionInitialMargin": _fmt(margin), "openOrderInitialMargin": "0",
                        "availableBalance": _fmt(wallet + upnl - margin), "crossWalletBalance": _fmt(wallet),
                        "crossUnPnl": _fmt(upnl), "maxWithdrawAmount": _fmt(wallet + upnl - margin),
                        "updateTime": self.now_ms()}],
            "positions": [self._position_row()]})

    def _futures_balance(self, params: dict) -> web.Response:
        wallet, upnl = self.balances["USDT"], self._unrealized()
        return web.json_response([{"accountAlias": "test", "asset": "USDT", "balance": _fmt(wallet),
                                   "crossWalletBalance": _fmt(wallet), "crossUnPnl": _fmt(upnl),
                                   "availableBalance": _fmt(wallet + upnl - self._position_margin()),
                                   "maxWithdrawAmount": _fmt(wallet), "updateTime": self.now_ms()}])

    def _position_row(self) -> dict:
        notional = self.position_qty * self.price
        return {"symbol": self.symbol, "positionSide": "BOTH", "positionAmt": _fmt(self.position_qty),
                "entryPrice": _fmt(self.entry_price), "breakEvenPrice": _fmt(self.entry_price),
                "markPrice": _fmt(self.price), "unRealizedProfit": _fmt(self._unrealized()),
                "unrealizedProfit": _fmt(self._unrealized()),
                "liquidationPrice": "0", "leverage": str(self.leverage), "marginType": "cross",
                "isolatedMargin": "0", "isolatedWallet": "0", "notional": _fmt(notional),
                "initialMargin": _fmt(self._position_margin()),
                "positionInitialMargin": _fmt(self._position_margin()),
                "maintMargin": _fmt(abs(notional) * _dec("0.004")), "isAutoAddMargin": "false",
                "maxNotionalValue": "1000000", "marginAsset": "USDT", "updateTime": self.now_ms()}

    def _position_risk(self, params: dict) -> web.Response:
        return web.json_response([self._position_row()] if self.position_qty else [])

    def _leverage_bracket(self, params: dict) -> web.Response:
        return web.json_response([{"symbol": self.symbol, "brackets": [{
            "bracket": 1, "initialLeverage": 125, "notionalCap": 1000000, "notionalFloor": 0,
            "maintMarginRatio": 0.004, "cum": 0.0}]}])

    def _unrealized(self) -> Decimal:
        return (self.price - self.entry_price) * self.position_qty if self.position_qty else Decimal(0)

    def _position_margin(self) -> Decimal:
        return abs(self.position_qty * self.price) / self.leverage

    def _locked(self) -> dict:
        locked: dict = {}
        for o in self.orders.values():
            if o.status in ("NEW", "PARTIALLY_FILLED") and o.type != "MARKET":
                left = o.qty - o.executed
                if o.side == "BUY":
                    locked["USDT"] = locked.get("USDT", 0) + left * (o.price or o.stop_price)
                else:
                    locked["BTC"] = locked.get("BTC", 0) + left
        return locked

    # ---------------------------------------------------------------- orders
    def _new_order(self, params: dict) -> web.Response:
        client_id = params.get("newClientOrderId") or f"srv{next(self._ids)}"
        self.order_posts[client_id] = self.order_posts.get(client_id, 0) + 1
        if any(o.client_id == client_id and o.status in ("NEW", "PARTIALLY_FILLED") for o in self.orders.values()):
            return _error(400, -2010, "Duplicate order sent.")
        try:
            qty = _dec(params["quantity"])
        except KeyError:
            return _error(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        kind = params.get("type", "")
        price = _dec(params.get("price") or 0)
        stop = _dec(params.get("stopPrice") or 0)
        refusal = self._filter_failure(qty, price or stop, self.price)
        if refusal:
            return _error(400, -1013, f"Filter failure: {refusal}")
        if params.get("reduceOnly", "false") not in ("true", "false"):
            return _error(400, -1130, "Data sent for parameter 'reduceOnly' is not valid.")
        reduce_only = params.get("reduceOnly") == "true"
        if reduce_only and self.venue != SPOT:
            closing = -1 if params["side"] == "SELL" else 1
            if self.position_qty * closing >= 0 or qty > abs(self.position_qty):
                return _error(400, -2022, "ReduceOnly Order is rejected.")
        if self.venue == SPOT and kind in ("MARKET", "STOP_LOSS") and params["side"] == "BUY":
            cost = qty * (stop or self.price)
            if cost > self.balances.get("USDT", 0) - self._locked().get("USDT", 0):
                return _error(400, -2010, "Account has insufficient balance for requested action.")
        if self.venue == SPOT and params["side"] == "SELL":
            # Spot sells only what the account holds and has not committed to other orders.
            if qty > self.balances.get("BTC", 0) - self._locked().get("BTC", 0):
                return _error(400, -2010, "Account has insufficient balance for requested action.")
        now = self.now_ms()
        order = Order(next(self._ids), client_id, params["symbol"], params["side"], kind, qty, price, stop,
                      params.get("timeInForce", "GTC"), reduce_only, time=now, update=now)
        self.orders[order.order_id] = order
        self._report(order, "NEW")
        self._match(order, taker=True)
        return web.json_response(self._order_json(order, full=True))

    def _filter_failure(self, qty: Decimal, price: Decimal, last: Decimal) -> str:
        r = MARKET_RULES
        if qty < _dec(r["min_qty"]) or qty > _dec(r["max_qty"]) or qty % _dec(r["step"]):
            return "LOT_SIZE"
        if price and price % _dec(r["tick"]):
            return "PRICE_FILTER"
        if qty * (price or last) < _dec(r["min_notional"]):
            return "NOTIONAL" if self.venue == SPOT else "MIN_NOTIONAL"
        return ""

    def _triggered(self, order: Order) -> bool:
        if order.type == "MARKET":
            return True
        if order.type in ("LIMIT",):
            return self.price <= order.price if order.side == "BUY" else self.price >= order.price
        if order.type in ("STOP_LOSS", "STOP_MARKET"):
            return self.price >= order.stop_price if order.side == "BUY" else self.price <= order.stop_price
        if order.type in ("TAKE_PROFIT", "TAKE_PROFIT_MARKET"):
            return self.price <= order.stop_price if order.side == "BUY" else self.price >= order.stop_price
        return False

    def _match(self, order: Order, taker: bool = False) -> None:
        """Fill ``order`` if the price reaches it: a resting limit (a maker) at its own price,
        one marketable as it arrives (``taker``) at the market's, which is its price or better."""
        if order.status not in ("NEW", "PARTIALLY_FILLED") or not self._triggered(order):
            return
        left = order.qty - order.executed
        if self._partial:
            size = (order.qty * self._partial.pop(0)).quantize(_dec(MARKET_RULES["step"]))
            size = min(max(size, _dec(MARKET_RULES["step"])), left)
        else:
            size = left
        if order.reduce_only and self.venue != SPOT:
            # As Binance: a reduce-only order never opens or grows a position; with nothing
            # left to reduce it expires, and it trades at most what is left.
            closing = -1 if order.side == "SELL" else 1
            room = abs(self.position_qty) if self.position_qty * closing < 0 else Decimal(0)
            if room <= 0:
                order.status, order.update = "EXPIRED", self.now_ms()
                self._report(order, "EXPIRED")
                return
            size = min(size, room)
        fill_price = self.price
        if order.type == "LIMIT":
            fill_price = ((min(order.price, self.price) if order.side == "BUY" else max(order.price, self.price))
                          if taker else order.price)
        self._execute(order, size, fill_price)

    def _execute(self, order: Order, size: Decimal, price: Decimal) -> None:
        now = self.now_ms()
        sign = 1 if order.side == "BUY" else -1
        realized = Decimal(0)
        if self.venue == SPOT:
            self.balances["USDT"] = self.balances.get("USDT", 0) - sign * size * price
            self.balances["BTC"] = self.balances.get("BTC", 0) + sign * size
        else:
            realized = self._move_position(sign * size, price)
        order.executed += size
        order.quote += size * price
        order.status = "FILLED" if order.executed >= order.qty else "PARTIALLY_FILLED"
        order.update = now
        trade = {"id": next(self._trade_ids), "orderId": order.order_id, "client_id": order.client_id,
                 "symbol": order.symbol, "side": order.side, "price": price, "qty": size,
                 "time": now, "realized": realized}
        self.trades.append(trade)
        self._report(order, "TRADE", trade)

    def _move_position(self, delta: Decimal, price: Decimal) -> Decimal:
        old = self.position_qty
        realized = Decimal(0)
        if old and (old > 0) != (delta > 0):
            closed = min(abs(delta), abs(old))
            realized = (price - self.entry_price) * closed * (1 if old > 0 else -1)
            self.balances["USDT"] += realized
            self.realized += realized
        new = old + delta
        if new == 0:
            self.entry_price = Decimal(0)
        elif old == 0 or (old > 0) != (new > 0):
            self.entry_price = price
        elif (old > 0) == (delta > 0):
            self.entry_price = (self.entry_price * abs(old) + price * abs(delta)) / abs(new)
        self.position_qty = new
        return realized

    def _find(self, params: dict) -> Optional[Order]:
        client_id = params.get("origClientOrderId")
        if client_id:
            return self.order_by_client_id(client_id)
        if params.get("orderId"):
            return self.orders.get(int(params["orderId"]))
        return None

    def _query_order(self, params: dict) -> web.Response:
        order = self._find(params)
        if order is None:
            return _error(400, -2013, "Order does not exist.")
        return web.json_response(self._order_json(order))

    def _cancel_order(self, params: dict) -> web.Response:
        order = self._find(params)
        if order is None or order.status not in ("NEW", "PARTIALLY_FILLED"):
            return _error(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        order.update = self.now_ms()
        self._report(order, "CANCELED")
        return web.json_response(self._order_json(order))

    def _modify_order(self, params: dict) -> web.Response:
        """USD-M Modify Order: new price (and quantity) on the same order."""
        order = self._find(params)
        if order is None or order.status not in ("NEW", "PARTIALLY_FILLED"):
            return _error(400, -2013, "Order does not exist.")
        price, qty = _dec(params.get("price") or order.price), _dec(params.get("quantity") or order.qty)
        refusal = self._filter_failure(qty, price, self.price)
        if refusal:
            return _error(400, -1013, f"Filter failure: {refusal}")
        order.price, order.qty, order.update = price, qty, self.now_ms()
        self._report(order, "AMENDMENT")
        self._match(order, taker=True)
        return web.json_response(self._order_json(order))

    def _cancel_replace(self, params: dict) -> web.Response:
        """Spot Cancel an Existing Order and Send a New Order (STOP_ON_FAILURE)."""
        old = self._find({"origClientOrderId": params.get("cancelOrigClientOrderId"),
                          "orderId": params.get("cancelOrderId")})
        if old is None or old.status not in ("NEW", "PARTIALLY_FILLED"):
            return web.json_response({"code": -2022, "msg": "Order cancel-replace failed.", "data": {
                "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                "cancelResponse": {"code": -2011, "msg": "Unknown order sent."}, "newOrderResponse": None}},
                status=400)
        old.status, old.update = "CANCELED", self.now_ms()
        self._report(old, "CANCELED")
        created = self._new_order({k: v for k, v in params.items() if not k.startswith("cancel")})
        # A replacement is not a new order of the client's: counted apart from order_posts.
        client_id = params.get("newClientOrderId", "")
        self.order_posts[client_id] -= 1
        self.replacements[client_id] = self.replacements.get(client_id, 0) + 1
        new = json.loads(created.text)
        return web.json_response({"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
                                  "cancelResponse": self._order_json(old), "newOrderResponse": new})

    def _open_orders(self, params: dict) -> web.Response:
        return web.json_response([self._order_json(o) for o in self.orders.values()
                                  if o.status in ("NEW", "PARTIALLY_FILLED")])

    def _my_trades(self, params: dict) -> web.Response:
        rows = [t for t in self.trades if t["symbol"] == params.get("symbol", t["symbol"])]
        if params.get("orderId"):
            rows = [t for t in rows if t["orderId"] == int(params["orderId"])]
        if params.get("startTime"):
            rows = [t for t in rows if t["time"] >= int(params["startTime"])]
        if params.get("fromId"):
            rows = [t for t in rows if t["id"] >= int(params["fromId"])]
        return web.json_response([self._trade_json(t) for t in rows[-int(params.get("limit", 500)):]])

    def _trade_json(self, t: dict) -> dict:
        base = {"symbol": t["symbol"], "id": t["id"], "orderId": t["orderId"], "price": _fmt(t["price"]),
                "qty": _fmt(t["qty"]), "quoteQty": _fmt(t["price"] * t["qty"]), "commission": "0",
                "commissionAsset": "USDT", "time": t["time"], "maker": False}
        if self.venue == SPOT:
            base.update({"orderListId": -1, "isBuyer": t["side"] == "BUY", "isMaker": False,
                         "isBestMatch": True})
        else:
            base.update({"side": t["side"], "realizedPnl": _fmt(t["realized"]), "marginAsset": "USDT",
                         "positionSide": "BOTH", "buyer": t["side"] == "BUY"})
        return base

    def _order_json(self, o: Order, full: bool = False) -> dict:
        row = {"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_id,
               "price": _fmt(o.price), "origQty": _fmt(o.qty), "executedQty": _fmt(o.executed),
               "status": o.status, "timeInForce": o.time_in_force, "type": o.type, "side": o.side,
               "stopPrice": _fmt(o.stop_price)}
        if self.venue == SPOT:
            row.update({"orderListId": -1, "cummulativeQuoteQty": _fmt(o.quote), "time": o.time,
                        "transactTime": o.update, "updateTime": o.update, "isWorking": True,
                        "workingTime": o.time, "origQuoteOrderQty": "0",
                        "selfTradePreventionMode": "EXPIRE_MAKER"})
            if full:
                row["fills"] = [{"price": _fmt(t["price"]), "qty": _fmt(t["qty"]), "commission": "0",
                                 "commissionAsset": "USDT", "tradeId": t["id"]}
                                for t in self.trades if t["orderId"] == o.order_id]
        else:
            row.update({"avgPrice": _fmt(o.avg), "cumQty": _fmt(o.executed), "cumQuote": _fmt(o.quote),
                        "reduceOnly": o.reduce_only, "closePosition": False, "positionSide": "BOTH",
                        "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.type,
                        "time": o.time, "updateTime": o.update, "goodTillDate": 0,
                        "priceMatch": "NONE", "selfTradePreventionMode": "NONE"})
        return row

    # ---------------------------------------------------------------- algo (conditional) orders
    def _new_algo(self, params: dict) -> web.Response:
        client_id = params.get("clientAlgoId") or f"srvalgo{next(self._ids)}"
        self.order_posts[client_id] = self.order_posts.get(client_id, 0) + 1
        qty, trigger = _dec(params.get("quantity") or 0), _dec(params.get("triggerPrice") or 0)
        refusal = self._filter_failure(qty, trigger, self.price)
        if refusal:
            return _error(400, -1013, f"Filter failure: {refusal}")
        now = self.now_ms()
        algo = {"algoId": next(self._ids), "clientAlgoId": client_id, "algoType": "CONDITIONAL",
                "orderType": params.get("type"), "symbol": params["symbol"], "side": params["side"],
                "positionSide": "BOTH", "timeInForce": params.get("timeInForce", "GTC"),
                "quantity": _fmt(qty), "algoStatus": "NEW", "triggerPrice": _fmt(trigger),
                "price": params.get("price", "0"), "icebergQuantity": None,
                "selfTradePreventionMode": "NONE", "workingType": "CONTRACT_PRICE", "priceMatch": "NONE",
                "closePosition": False, "priceProtect": False,
                "reduceOnly": params.get("reduceOnly") == "true", "createTime": now, "updateTime": now,
                "triggerTime": 0, "goodTillDate": 0, "actualOrderId": "", "executedQty": "0", "avgPrice": "0"}
        self.algos[algo["algoId"]] = algo
        self._report_algo(algo)
        self._maybe_trigger(algo)
        return web.json_response(algo)

    def _find_algo(self, params: dict) -> Optional[dict]:
        if params.get("clientAlgoId"):
            return self.algo_by_client_id(params["clientAlgoId"])
        return self.algos.get(int(params.get("algoId") or 0))

    def _query_algo(self, params: dict) -> web.Response:
        algo = self._find_algo(params)
        if algo is None:
            return _error(400, -2013, "Order does not exist.")
        return web.json_response(algo)

    def _cancel_algo(self, params: dict) -> web.Response:
        algo = self._find_algo(params)
        if algo is None or algo["algoStatus"] != "NEW":
            return _error(400, -2011, "Unknown order sent.")
        algo["algoStatus"] = "CANCELED"
        self._report_algo(algo)
        return web.json_response({"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"],
                                  "code": "200", "msg": "success"})

    def _open_algos(self, params: dict) -> web.Response:
        return web.json_response([a for a in self.algos.values() if a["algoStatus"] == "NEW"])

    def _maybe_trigger(self, algo: dict) -> None:
        trigger = _dec(algo["triggerPrice"])
        up = algo["side"] == "BUY"
        if algo["orderType"] in ("TAKE_PROFIT", "TAKE_PROFIT_MARKET"):
            up = not up
        if not (self.price >= trigger if up else self.price <= trigger):
            return
        now = self.now_ms()
        # The Algo Service places a matching-engine order of its own id when it triggers.
        order = Order(next(self._ids), f"algo{algo['algoId']}", algo["symbol"], algo["side"], "MARKET",
                      _dec(algo["quantity"]), Decimal(0), trigger, "GTC", algo["reduceOnly"], time=now, update=now)
        self.orders[order.order_id] = order
        algo.update(algoStatus="TRIGGERED", actualOrderId=str(order.order_id), triggerTime=now, updateTime=now)
        self._report_algo(algo)
        self._report(order, "NEW")
        self._match(order, taker=True)
        algo.update(algoStatus="FINISHED", executedQty=_fmt(order.executed), avgPrice=_fmt(order.avg))
        self._report_algo(algo)

    def _report_algo(self, algo: dict) -> None:
        now = self.now_ms()
        self._publish_user({"e": "ALGO_UPDATE", "T": now, "E": now, "o": {
            "caid": algo["clientAlgoId"], "aid": algo["algoId"], "at": "CONDITIONAL", "o": algo["orderType"],
            "s": algo["symbol"], "S": algo["side"], "ps": "BOTH", "f": algo["timeInForce"],
            "q": algo["quantity"], "X": algo["algoStatus"], "ai": algo["actualOrderId"],
            "ap": algo["avgPrice"], "aq": algo["executedQty"], "act": "0", "tp": algo["triggerPrice"],
            "p": algo["price"], "V": "NONE", "wt": "CONTRACT_PRICE", "pm": "NONE", "cp": False,
            "pP": False, "R": algo["reduceOnly"], "tt": algo["triggerTime"], "gtd": 0, "rm": ""}})

    # ================================================================ user data stream
    def _new_listen_key(self, params: dict) -> web.Response:
        key = f"lk{next(self._ids)}x" + "0" * 40
        self.listen_keys.add(key)
        return web.json_response({"listenKey": key})

    def _report(self, order: Order, execution: str, trade: Optional[dict] = None) -> None:
        now = self.now_ms()
        last_qty = trade["qty"] if trade else Decimal(0)
        last_price = trade["price"] if trade else Decimal(0)
        if self.venue == SPOT:
            event = {"e": "executionReport", "E": now, "s": order.symbol, "c": order.client_id,
                     "S": order.side, "o": order.type, "f": order.time_in_force, "q": _fmt(order.qty),
                     "p": _fmt(order.price), "P": _fmt(order.stop_price), "F": "0", "g": -1, "C": "",
                     "x": execution, "X": order.status, "r": "NONE", "i": order.order_id,
                     "l": _fmt(last_qty), "z": _fmt(order.executed), "L": _fmt(last_price), "n": "0",
                     "N": "USDT" if trade else None, "T": now, "t": trade["id"] if trade else -1,
                     "I": next(self._ids), "w": order.status == "NEW", "m": False, "M": bool(trade),
                     "O": order.time, "Z": _fmt(order.quote), "Y": _fmt(last_qty * last_price), "Q": "0",
                     "W": order.time, "V": "EXPIRE_MAKER"}
        else:
            event = {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": {
                "s": order.symbol, "c": order.client_id, "S": order.side, "o": order.type,
                "f": order.time_in_force, "q": _fmt(order.qty), "p": _fmt(order.price),
                "ap": _fmt(order.avg), "sp": _fmt(order.stop_price), "x": execution, "X": order.status,
                "i": order.order_id, "l": _fmt(last_qty), "z": _fmt(order.executed), "L": _fmt(last_price),
                "N": "USDT", "n": "0", "T": now, "t": trade["id"] if trade else 0, "b": "0", "a": "0",
                "m": False, "R": order.reduce_only, "wt": "CONTRACT_PRICE", "ot": order.type,
                "ps": "BOTH", "cp": False, "rp": _fmt(trade["realized"]) if trade else "0",
                "pP": False, "si": 0, "ss": 0, "V": "NONE", "pm": "NONE", "gtd": 0}}
        if trade:
            self._last_trade_report[order.client_id] = event
        copies = 2 if self.duplicate_reports else 1
        for _ in range(copies):
            self._publish_user(event)

    def _publish_user(self, event: dict) -> None:
        frame = {"subscriptionId": 0, "event": event} if self.venue == SPOT else event
        text = json.dumps(frame)
        for ws in list(self._user_sockets):
            self._loop.call_soon_threadsafe(asyncio.ensure_future, _send(ws, text))

    def _publish_market(self, stream: str, event: dict) -> None:
        text = json.dumps(event)
        for ws, streams in list(self._market_sockets.items()):
            if stream in streams:
                self._loop.call_soon_threadsafe(asyncio.ensure_future, _send(ws, text))

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        path = request.path
        ws = web.WebSocketResponse(heartbeat=None)
        listen_key = self._user_stream_key(request)
        if listen_key is not None and listen_key not in self.listen_keys:
            return _error(400, -1125, "This listenKey does not exist.")
        await ws.prepare(request)
        try:
            if listen_key is not None:
                with self._lock:
                    self._user_sockets.add(ws)
                    self.user_subscriptions += 1
                async for _ in ws:
                    pass
            elif path.startswith("/ws-api/"):
                await self._ws_api(ws)
            else:
                await self._market_stream(ws)
        finally:
            with self._lock:
                self._user_sockets.discard(ws)
                self._market_sockets.pop(ws, None)
        return ws

    def _user_stream_key(self, request: web.Request) -> Optional[str]:
        """The listenKey of a user data stream connection (None: not a user data stream)."""
        if request.path.startswith("/private/ws"):
            return request.query.get("listenKey", "")
        return None

    async def _ws_api(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            request = json.loads(msg.data)
            method, params, rid = request.get("method"), request.get("params") or {}, request.get("id")
            if method == "userDataStream.subscribe.signature":
                if not self._ws_signature_ok(params):
                    await ws.send_str(json.dumps({"id": rid, "status": 400, "error": {
                        "code": -1022, "msg": "Signature for this request is not valid."}}))
                    continue
                with self._lock:
                    self._user_sockets.add(ws)
                    self.user_subscriptions += 1
                await ws.send_str(json.dumps({"id": rid, "status": 200, "result": {"subscriptionId": 0}}))
            else:
                await ws.send_str(json.dumps({"id": rid, "status": 400, "error": {
                    "code": -1100, "msg": f"unknown method {method}"}}))

    def _ws_signature_ok(self, params: dict) -> bool:
        if params.get("apiKey") != self.api_key:
            return False
        unsigned = {k: v for k, v in params.items() if k != "signature"}
        query = "&".join(f"{k}={unsigned[k]}" for k in sorted(unsigned))
        expected = hmac.new(self.secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(str(params.get("signature", "")), expected)

    async def _market_stream(self, ws: web.WebSocketResponse) -> None:
        with self._lock:
            self._market_sockets[ws] = set()
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            request = json.loads(msg.data)
            streams = set(request.get("params") or [])
            with self._lock:
                if request.get("method") == "SUBSCRIBE":
                    self._market_sockets[ws] |= streams
                elif request.get("method") == "UNSUBSCRIBE":
                    self._market_sockets[ws] -= streams
            await ws.send_str(json.dumps({"result": None, "id": request.get("id")}))


async def _send(ws: web.WebSocketResponse, text: str) -> None:
    if not ws.closed:
        try:
            await ws.send_str(text)
        except ConnectionError:
            pass  # the socket closed between the check and the send


def _signed_payload(request: web.Request, body: str) -> str:
    """The signed parameter string: the query's when it carries the signature, else the
    body's (both venues take parameters in either, whatever the method)."""
    query = request.rel_url.raw_query_string
    return query if "signature=" in query else body


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def main(argv=None) -> int:
    """Run one exchange until Ctrl-C; print its ccxt ``urls`` and write its record on exit."""
    import argparse
    import signal
    parser = argparse.ArgumentParser(description="Local Binance-protocol exchange for MAOTrade's ccxt broker")
    parser.add_argument("--venue", choices=list(VENUES), default=SPOT,
                        help="aster: signed by the fixed test wallet key of tests.ccxt.aster_server")
    parser.add_argument("--price", type=float, default=50000.0)
    parser.add_argument("--walk", type=float, default=0.1, help="seconds between price moves")
    parser.add_argument("--record", help="write the exchange's record (JSON) here on exit")
    parser.add_argument("--urls", help="write the ccxt urls (JSON) here once listening")
    args = parser.parse_args(argv)
    if args.venue == ASTER:
        from tests.ccxt.aster_server import AsterExchangeServer
        server = AsterExchangeServer(price=args.price).start()
    else:
        server = ExchangeServer(args.venue, price=args.price).start()
    server.start_walk(args.walk)
    urls = json.dumps(server.urls())
    if args.urls:
        with open(args.urls, "w") as fh:
            fh.write(urls)
    print(urls, flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    if args.record:
        with open(args.record, "w") as fh:
            json.dump(server.record(), fh, indent=1)
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
