"""A local Kite Connect: the REST API (v3) and the KiteTicker websocket, on 127.0.0.1.

It speaks the wire formats the official ``kiteconnect`` library reads: JSON envelopes
``{"status": "success", "data": ...}`` and ``{"status": "error", "error_type": ...,
"message": ...}`` with Kite's HTTP codes, ``token api_key:access_token`` authorisation,
the SHA-256 checksum of the session exchange, the instruments dump as CSV, candles as
arrays; on the websocket, binary tick packets (ltp 8 bytes, quote 44, full 184; prices in
paise, big-endian) framed by a packet count and lengths, 1-byte heartbeats, JSON text
order updates ``{"type": "order", "data": ...}`` and the ``subscribe``/``unsubscribe``/
``mode`` messages. Orders match against a last price the test moves.

Everything runs on one asyncio loop in a background thread; test hooks hop onto it.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import secrets
import struct
import threading
import time
from collections import Counter
from typing import Any, Callable, Optional

from aiohttp import WSMsgType, web

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
ERROR_STATUS = {"TokenException": 403, "PermissionException": 403, "InputException": 400,
                "OrderException": 400, "NetworkException": 503, "DataException": 502,
                "GeneralException": 500}
# Instruments of the dump: (exchange, tradingsymbol, instrument_token, last price, segment).
INSTRUMENTS = [("NSE", "INFY", 408065, 1500.0, "NSE"), ("NSE", "RELIANCE", 738561, 2500.0, "NSE"),
               ("NSE", "SBIN", 779521, 600.0, "NSE"), ("MCX", "CRUDEOIL24JANFUT", 53490439, 6000.0, "MCX-FUT")]
TICK_SIZE = 0.05  # of every instrument of the dump
VARIETIES = {"regular", "amo"}
ORDER_TYPES = {"MARKET", "LIMIT", "SL", "SL-M"}
PRODUCTS = {"CNC", "MIS", "NRML"}


def _now() -> str:
    return dt.datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S")


class KiteError(Exception):
    """An error envelope to answer with."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


class KiteServer:
    """The broker: sessions, instruments, prices, orders, trades, positions, margins."""

    def __init__(self, api_key: str = "kiteapikey", api_secret: str = "kite-api-secret-1234",
                 user_id: str = "AB1234", cash: float = 100_000.0, heartbeat_interval: float = 1.0):
        self.api_key, self.api_secret, self.user_id = api_key, api_secret, user_id
        self.cash = {"equity": cash, "commodity": 50_000.0}
        self.heartbeat_interval = heartbeat_interval
        self.request_tokens: set[str] = set()
        self.access_tokens: set[str] = set()
        self.instruments = {f"{e}:{s}": {"token": t, "price": p, "segment": seg, "volume": 0}
                            for e, s, t, p, seg in INSTRUMENTS}
        self.by_token = {v["token"]: k for k, v in self.instruments.items()}
        self.orders: dict[str, dict] = {}
        self.history: dict[str, list[dict]] = {}
        self.trades: list[dict] = []
        self.positions: dict[tuple, dict] = {}
        self.holdings: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.placed_tags: Counter = Counter()
        self.placed_at: list[float] = []
        # Every tick sent on the ticker: instrument_token, mode, time (epoch s), price, volume.
        self.ticks_sent: list[dict] = []
        self.market_open = True
        self.duplicate_updates = False
        self.refuse_ticker = False
        self.down = False
        self.partial_fills = 1
        self._fail_next: list[str] = []
        self._walk_stop = threading.Event()
        self._ws: dict[web.WebSocketResponse, dict] = {}
        self._next_order = 250_000_000_000
        self._next_trade = 10_000_000
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0

    # ================================================================ lifecycle
    def start(self) -> "KiteServer":
        """Serve on a free loopback port until ``stop``."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="kite-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("Kite server did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/ws", self._ticker)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._beat = self._loop.create_task(self._heartbeats())
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        """Close every connection and stop serving."""
        if self._loop is None:
            return
        self._walk_stop.set()
        self.call(self._close_all_ws)
        self.call(self._beat.cancel)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "KiteServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def api_root(self) -> str:
        """REST root for ``KiteConnect(root=...)``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ticker_root(self) -> str:
        """Websocket root for ``KiteTicker(root=...)``."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def call(self, fn: Callable, *args) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # ================================================================ test hooks
    def issue_request_token(self) -> str:
        """A request token as the browser login would hand out (single use)."""
        token = secrets.token_hex(16)
        self.call(self.request_tokens.add, token)
        return token

    def issue_access_token(self) -> str:
        """An access token valid now (as if a login happened)."""
        token = secrets.token_hex(16)
        self.call(self.access_tokens.add, token)
        return token

    def expire_tokens(self) -> None:
        """The 06:00 expiry: every access token stops working, tickers are closed."""
        def expire():
            self.access_tokens.clear()
            self._close_all_ws()
        self.call(expire)

    def drop_ticker(self) -> None:
        """Cut every ticker connection without a closing handshake."""
        def drop():
            for ws in list(self._ws):
                transport = ws._req.transport if ws._req is not None else None
                if transport is not None:
                    transport.abort()
            self._ws.clear()
        self.call(drop)

    def set_price(self, epic: str, price: float, volume: int = 10) -> None:
        """Move the last price (and traded volume), match orders, send ticks."""
        self.call(self._set_price, epic, price, volume)

    def start_walk(self, epic: str, step: float = 0.5, leg: int = 12, interval: float = 0.25) -> None:
        """Move ``epic`` up ``leg`` steps then down ``leg`` steps, forever, every ``interval`` s
        (trends that turn: a moving-average crossover trades on them).

        Moves happen half an interval past each multiple of ``interval`` of the clock (with
        0.25: at .125, .375, .625, .875 of each second), so no tick is on its way across a
        second's boundary when the worker closes a one-second bar."""
        def next_move() -> float:
            return (int(time.time() / interval) + 1.5) * interval - time.time()

        def walk():
            i = 0
            while not self._walk_stop.wait(next_move()):
                direction = 1 if (i // leg) % 2 == 0 else -1
                price = self.call(lambda: self.instruments[epic]["price"]) + direction * step
                self.set_price(epic, round(price, 2))
                i += 1
        self._walk_stop.clear()
        threading.Thread(target=walk, daemon=True, name=f"walk-{epic}").start()

    def fail_next_order(self, error_type: str) -> None:
        """Answer the next placement with this error_type; 'lost_answer' places the order
        and then answers NetworkException, as a gateway timeout after the OMS took it."""
        self.call(self._fail_next.append, error_type)

    def open_market(self) -> None:
        """Open the session: AMO orders go to the exchange and match."""
        def run():
            self.market_open = True
            for order in list(self.orders.values()):
                if order["status"] == "AMO REQ RECEIVED":
                    self._update(order, status="OPEN" if order["order_type"] != "SL-M" else "TRIGGER PENDING")
                    self._match(order)
        self.call(run)

    def go_down(self) -> None:
        """Become unreachable: REST answers NetworkException, the ticker drops and refuses."""
        def run():
            self.down = self.refuse_ticker = True
        self.call(run)
        self.drop_ticker()

    def come_back(self) -> None:
        """End ``go_down``."""
        def run():
            self.down = self.refuse_ticker = False
        self.call(run)

    def manual_fill(self, tag: str, qty: int) -> None:
        """Fill ``qty`` of the working order carrying ``tag`` at its price (or the last price)."""
        def run():
            order = next(o for o in self.orders.values() if o["tag"] == tag)
            if order["status"] not in ("OPEN", "TRIGGER PENDING"):
                raise ValueError(f"order {order['order_id']} is {order['status']}")
            price = order["price"] or self.instruments[f"{order['exchange']}:{order['tradingsymbol']}"]["price"]
            self._trade(order, min(qty, order["pending_quantity"]), price)
        self.call(run)

    def repeat_last_update(self, tag: str) -> None:
        """Send the newest order update of the order carrying ``tag`` again, unchanged."""
        def run():
            order = next(o for o in self.orders.values() if o["tag"] == tag)
            self._push_update(self.history[order["order_id"]][-1])
        self.call(run)

    def send_garbage(self) -> None:
        """Put malformed frames on every ticker connection (text, JSON and binary)."""
        def run():
            for ws in list(self._ws):
                for text in ("{not json", json.dumps({"type": "order", "data": {"status": "WHAT", "tag": 7}}),
                             json.dumps({"type": "order"})):
                    asyncio.ensure_future(self._send_text(ws, text))
                asyncio.ensure_future(self._send_bytes(ws, struct.pack(">HH", 1, 10) + b"\x01" * 10))
        self.call(run)

    def ticker_clients(self) -> int:
        """How many ticker connections are open."""
        return self.call(lambda: len(self._ws))

    def subscriptions(self) -> dict[int, str]:
        """Instrument token -> mode, over every ticker connection."""
        return self.call(lambda: {t: m for s in self._ws.values() for t, m in s["modes"].items()})

    def snapshot(self) -> dict:
        """The broker's record: orders, trades, positions and the ticks it sent (for comparing
        with MAOTrade's)."""
        return self.call(lambda: json.loads(json.dumps({
            "orders": list(self.orders.values()), "trades": list(self.trades),
            "positions": self._positions()["net"], "ticks": list(self.ticks_sent)})))

    def net_quantity(self, epic: str) -> int:
        """Net quantity of every product in ``epic``."""
        return self.call(lambda: sum(p["quantity"] for k, p in self.positions.items() if f"{k[0]}:{k[1]}" == epic))

    # ================================================================ REST
    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        self.requests.append((request.method, path))
        try:
            if self.down:
                raise KiteError("NetworkException", "Kite is down (injected by the test)")
            if request.headers.get("X-Kite-Version") != "3":
                raise KiteError("InputException", "Missing or invalid X-Kite-Version header")
            if path == "/session/token" and request.method == "POST":
                return _ok(await self._session_token(await request.post()))
            self._authorise(request)
            body = await request.post() if request.method in ("POST", "PUT") else {}
            return await self._route(request, path, dict(body), dict(request.query))
        except KiteError as err:
            return web.json_response({"status": "error", "message": str(err), "data": None,
                                      "error_type": err.error_type}, status=ERROR_STATUS[err.error_type])

    def _authorise(self, request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        api_key, _, token = value.partition(":")
        if scheme != "token" or api_key != self.api_key or token not in self.access_tokens:
            raise KiteError("TokenException", "Incorrect `api_key` or `access_token`.")

    async def _session_token(self, form) -> dict:
        api_key, request_token, checksum = form.get("api_key"), form.get("request_token"), form.get("checksum")
        if api_key != self.api_key:
            raise KiteError("InputException", "Invalid `api_key`.")
        expected = hashlib.sha256(f"{api_key}{request_token}{self.api_secret}".encode()).hexdigest()
        if checksum != expected:
            raise KiteError("TokenException", "Invalid `checksum`.")
        if request_token not in self.request_tokens:
            raise KiteError("TokenException", "Token is invalid or has expired.")
        self.request_tokens.discard(request_token)
        access = secrets.token_hex(16)
        self.access_tokens.add(access)
        return {"user_id": self.user_id, "user_name": "Test User", "user_shortname": "Test",
                "email": "test@example.com", "user_type": "individual", "broker": "ZERODHA",
                "exchanges": ["NSE", "BSE", "MCX"], "products": sorted(PRODUCTS),
                "order_types": sorted(ORDER_TYPES), "api_key": api_key, "access_token": access,
                "public_token": secrets.token_hex(8), "refresh_token": "", "login_time": _now(),
                "avatar_url": None, "meta": {"demat_consent": "consent"}}

    async def _route(self, request: web.Request, path: str, body: dict, query: dict) -> web.Response:
        method, parts = request.method, [p for p in path.split("/") if p]
        if method == "GET" and path == "/user/profile":
            return _ok({"user_id": self.user_id, "user_name": "Test User", "broker": "ZERODHA",
                        "exchanges": ["NSE", "BSE", "MCX"], "products": sorted(PRODUCTS)})
        if method == "GET" and parts[:2] == ["user", "margins"]:
            margins = self._margins()
            return _ok(margins[parts[2]] if len(parts) == 3 else margins)
        if method == "GET" and path == "/portfolio/positions":
            return _ok(self._positions())
        if method == "GET" and path == "/portfolio/holdings":
            return _ok(self.holdings)
        if method == "GET" and path == "/orders":
            return _ok(list(self.orders.values()))
        if method == "GET" and path == "/trades":
            return _ok(self.trades)
        if parts and parts[0] == "orders":
            return await self._orders_route(method, parts, body)
        if method == "GET" and parts[:2] == ["instruments", "historical"] and len(parts) == 4:
            return _ok({"candles": self._candles(int(parts[2]), parts[3], query)})
        if method == "GET" and parts and parts[0] == "instruments" and len(parts) <= 2:
            return web.Response(body=self._instruments_csv(parts[1] if len(parts) == 2 else None),
                                content_type="text/csv")
        if method == "GET" and path == "/quote/ltp":
            keys = request.query.getall("i", [])
            return _ok({k: {"instrument_token": self.instruments[k]["token"],
                            "last_price": self.instruments[k]["price"]} for k in keys if k in self.instruments})
        raise KiteError("GeneralException", f"Route not found: {method} {path}")

    async def _orders_route(self, method: str, parts: list, body: dict) -> web.Response:
        if method == "POST" and len(parts) == 2:
            return _ok({"order_id": await self._place(parts[1], body)})
        if method == "GET" and len(parts) == 2:
            if parts[1] not in self.history:
                raise KiteError("InputException", "Couldn't find that `order_id`.")
            return _ok(self.history[parts[1]])
        if method == "GET" and len(parts) == 3 and parts[2] == "trades":
            return _ok([t for t in self.trades if t["order_id"] == parts[1]])
        if method == "PUT" and len(parts) == 3:
            return _ok({"order_id": self._modify(parts[2], body)})
        if method == "DELETE" and len(parts) == 3:
            return _ok({"order_id": self._cancel(parts[2])})
        raise KiteError("GeneralException", "Route not found")

    # ================================================================ orders
    async def _place(self, variety: str, body: dict) -> str:
        if variety not in VARIETIES:
            raise KiteError("InputException", f"Invalid `variety` {variety}.")
        lose_answer = False
        if self._fail_next:
            failure = self._fail_next.pop(0)
            if failure == "lost_answer":
                lose_answer = True  # the order is placed, its answer never arrives
            else:
                raise KiteError(failure, f"{failure} injected by the test")
        key = f"{body.get('exchange')}:{body.get('tradingsymbol')}"
        if key not in self.instruments:
            raise KiteError("InputException", "Invalid `tradingsymbol`.")
        tag = body.get("tag") or ""
        if len(tag) > 20:
            raise KiteError("InputException", "Tag length should be at most 20 characters.")
        if body.get("order_type") not in ORDER_TYPES or body.get("product") not in PRODUCTS:
            raise KiteError("InputException", "Invalid `order_type` or `product`.")
        if body.get("transaction_type") not in ("BUY", "SELL"):
            raise KiteError("InputException", "Invalid `transaction_type`.")
        try:
            quantity = int(body.get("quantity"))
        except (TypeError, ValueError):
            raise KiteError("InputException", "Invalid `quantity`.") from None
        if variety == "regular" and not self.market_open:
            raise KiteError("InputException", "Markets are closed right now. Use GTT for placing long "
                                              "standing orders instead.")
        if variety == "amo" and self.market_open:
            raise KiteError("InputException", "AMO orders are accepted only after market hours.")
        if tag:
            self.placed_tags[tag] += 1
        self.placed_at.append(time.monotonic())
        self._next_order += 1
        order_id = str(self._next_order)
        price = float(body.get("price") or 0)
        trigger = float(body.get("trigger_price") or 0)
        if body["order_type"] in ("SL", "SL-M") and trigger <= 0:
            raise KiteError("InputException", "Trigger price is required for SL orders.")
        _check_ticks(price, trigger)
        order = {"order_id": order_id, "exchange_order_id": None, "parent_order_id": None,
                 "status": "PUT ORDER REQ RECEIVED", "status_message": None, "order_timestamp": _now(),
                 "exchange_timestamp": None, "variety": variety, "exchange": body["exchange"],
                 "tradingsymbol": body["tradingsymbol"], "instrument_token": self.instruments[key]["token"],
                 "order_type": body["order_type"], "transaction_type": body["transaction_type"],
                 "validity": body.get("validity") or "DAY", "product": body["product"], "quantity": quantity,
                 "disclosed_quantity": 0, "price": price, "trigger_price": trigger, "average_price": 0,
                 "filled_quantity": 0, "pending_quantity": quantity, "cancelled_quantity": 0,
                 "market_protection": 0, "tag": tag or None, "tags": [tag] if tag else [],
                 "placed_by": self.user_id, "guid": secrets.token_hex(6)}
        self.orders[order_id] = order
        self.history[order_id] = []
        self._update(order)
        if variety == "amo":
            self._update(order, status="AMO REQ RECEIVED")
        else:
            self._update(order, status="TRIGGER PENDING" if order["order_type"] in ("SL", "SL-M") else "OPEN",
                         exchange_order_id=str(1_100_000_000_000_000 + int(order_id) % 10**9))
            # Kite answers the REST call before the order reaches the exchange: matching runs next.
            asyncio.get_running_loop().call_soon(self._match_new, order)
        if lose_answer:
            raise KiteError("NetworkException", "Gateway timed out talking to the OMS")
        return order_id

    def _modify(self, order_id: str, body: dict) -> str:
        order = self.orders.get(order_id)
        if order is None:
            raise KiteError("InputException", "Couldn't find that `order_id`.")
        if order["status"] not in ("OPEN", "TRIGGER PENDING", "AMO REQ RECEIVED"):
            raise KiteError("OrderException", f"Order cannot be modified as it is {order['status'].lower()}.")
        changes = {k: float(body[k]) for k in ("price", "trigger_price") if body.get(k)}
        _check_ticks(*changes.values())
        if body.get("quantity"):
            changes["quantity"] = int(body["quantity"])
            changes["pending_quantity"] = changes["quantity"] - order["filled_quantity"]
        self._update(order, status="MODIFIED", **changes)
        self._update(order, status="TRIGGER PENDING" if order["order_type"] in ("SL", "SL-M") else "OPEN")
        self._match(order)
        return order_id

    def _cancel(self, order_id: str) -> str:
        order = self.orders.get(order_id)
        if order is None:
            raise KiteError("InputException", "Couldn't find that `order_id`.")
        if order["status"] not in ("OPEN", "TRIGGER PENDING", "AMO REQ RECEIVED"):
            raise KiteError("OrderException", f"Order cannot be cancelled as it is {order['status'].lower()}.")
        self._update(order, status="CANCELLED", cancelled_quantity=order["pending_quantity"], pending_quantity=0,
                     status_message="Cancelled by user")
        return order_id

    def _match_new(self, order: dict) -> None:
        self._match(order)
        if order["validity"] == "IOC" and order["status"] in ("OPEN", "TRIGGER PENDING"):
            self._update(order, status="CANCELLED", cancelled_quantity=order["pending_quantity"],
                         pending_quantity=0, status_message="IOC order not filled at once")

    def _set_price(self, key: str, price: float, volume: int) -> None:
        inst = self.instruments[key]
        inst["price"] = price
        inst["volume"] += volume
        for order in list(self.orders.values()):
            if f"{order['exchange']}:{order['tradingsymbol']}" == key:
                self._match(order)
        self._send_ticks([inst["token"]])

    def _match(self, order: dict) -> None:
        if order["status"] not in ("OPEN", "TRIGGER PENDING"):
            return
        price = self.instruments[f"{order['exchange']}:{order['tradingsymbol']}"]["price"]
        buy = order["transaction_type"] == "BUY"
        kind = order["order_type"]
        if order["status"] == "TRIGGER PENDING":
            if not (price >= order["trigger_price"] if buy else price <= order["trigger_price"]):
                return
            if kind == "SL":
                self._update(order, status="OPEN")
        if kind in ("LIMIT", "SL") and not (price <= order["price"] if buy else price >= order["price"]):
            return
        fill_price = order["price"] if kind in ("LIMIT", "SL") else price
        remaining = order["pending_quantity"]
        parts = max(1, min(self.partial_fills, remaining))
        sizes = [remaining // parts] * parts
        sizes[-1] += remaining - sum(sizes)
        for size in sizes:
            self._trade(order, size, fill_price)

    def _trade(self, order: dict, size: int, price: float) -> None:
        self._next_trade += 1
        trade = {"trade_id": str(self._next_trade), "order_id": order["order_id"],
                 "exchange_order_id": order["exchange_order_id"], "exchange": order["exchange"],
                 "tradingsymbol": order["tradingsymbol"], "instrument_token": order["instrument_token"],
                 "product": order["product"], "average_price": price, "quantity": size,
                 "fill_timestamp": _now(), "order_timestamp": order["order_timestamp"],
                 "exchange_timestamp": _now(), "transaction_type": order["transaction_type"]}
        self.trades.append(trade)
        filled = order["filled_quantity"] + size
        average = (order["average_price"] * order["filled_quantity"] + price * size) / filled
        self._book(order, size, price)
        self._update(order, filled_quantity=filled, pending_quantity=order["quantity"] - filled,
                     average_price=average, status="COMPLETE" if filled >= order["quantity"] else "OPEN")

    def _book(self, order: dict, size: int, price: float) -> None:
        key = (order["exchange"], order["tradingsymbol"], order["product"])
        pos = self.positions.setdefault(key, {"quantity": 0, "buy_quantity": 0, "buy_value": 0.0,
                                              "sell_quantity": 0, "sell_value": 0.0})
        side = "buy" if order["transaction_type"] == "BUY" else "sell"
        pos[f"{side}_quantity"] += size
        pos[f"{side}_value"] += size * price
        pos["quantity"] = pos["buy_quantity"] - pos["sell_quantity"]
        self.cash["equity" if order["exchange"] != "MCX" else "commodity"] -= \
            (size * price if side == "buy" else -size * price)

    def _update(self, order: dict, **changes) -> None:
        order.update(changes)
        order["exchange_update_timestamp"] = _now()
        self.history[order["order_id"]].append(dict(order))
        self._push_update(order)

    def _push_update(self, order: dict) -> None:
        message = json.dumps({"type": "order", "id": "", "data": {**order, "user_id": self.user_id,
                                                                   "unfilled_quantity": 0,
                                                                   "app_id": 1, "checksum": ""}})
        for ws in list(self._ws):
            for _ in range(2 if self.duplicate_updates else 1):
                asyncio.ensure_future(self._send_text(ws, message))

    # ================================================================ views
    def _positions(self) -> dict:
        net = []
        for (exchange, symbol, product), p in self.positions.items():
            inst = self.instruments[f"{exchange}:{symbol}"]
            last = inst["price"]
            qty = p["quantity"]
            buy_avg = p["buy_value"] / p["buy_quantity"] if p["buy_quantity"] else 0.0
            sell_avg = p["sell_value"] / p["sell_quantity"] if p["sell_quantity"] else 0.0
            closed = min(p["buy_quantity"], p["sell_quantity"])
            realised = (sell_avg - buy_avg) * closed
            average = buy_avg if qty > 0 else sell_avg if qty < 0 else 0.0
            unrealised = (last - average) * qty
            net.append({"tradingsymbol": symbol, "exchange": exchange, "instrument_token": inst["token"],
                        "product": product, "quantity": qty, "overnight_quantity": 0, "multiplier": 1,
                        "average_price": average, "close_price": 0, "last_price": last,
                        "value": p["sell_value"] - p["buy_value"], "pnl": realised + unrealised,
                        "m2m": realised + unrealised, "unrealised": unrealised, "realised": realised,
                        "buy_quantity": p["buy_quantity"], "buy_price": buy_avg, "buy_value": p["buy_value"],
                        "sell_quantity": p["sell_quantity"], "sell_price": sell_avg,
                        "sell_value": p["sell_value"], "day_buy_quantity": p["buy_quantity"],
                        "day_sell_quantity": p["sell_quantity"]})
        return {"net": net, "day": [dict(r) for r in net]}

    def _margins(self) -> dict:
        def segment(cash: float, opening: float) -> dict:
            return {"enabled": True, "net": cash,
                    "available": {"adhoc_margin": 0, "cash": cash, "opening_balance": opening,
                                  "live_balance": cash, "collateral": 0, "intraday_payin": 0},
                    "utilised": {"debits": opening - cash, "exposure": 0, "m2m_realised": 0,
                                 "m2m_unrealised": 0, "option_premium": 0, "payout": 0, "span": 0,
                                 "holding_sales": 0, "turnover": 0, "liquid_collateral": 0,
                                 "stock_collateral": 0, "delivery": 0}}
        return {"equity": segment(self.cash["equity"], 100_000.0),
                "commodity": segment(self.cash["commodity"], 50_000.0)}

    def _instruments_csv(self, exchange: Optional[str]) -> bytes:
        lines = ["instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
                 "lot_size,instrument_type,segment,exchange"]
        for key, inst in self.instruments.items():
            ex, symbol = key.split(":")
            if exchange and ex != exchange:
                continue
            lines.append(f"{inst['token']},{inst['token'] >> 8},{symbol},{symbol},{inst['price']},,0,{TICK_SIZE},1,"
                         f"EQ,{inst['segment']},{ex}")
        return ("\n".join(lines) + "\n").encode()

    def _candles(self, token: int, interval: str, query: dict) -> list:
        steps = {"minute": 60, "3minute": 180, "5minute": 300, "15minute": 900, "60minute": 3600, "day": 86400}
        if token not in self.by_token or interval not in steps:
            raise KiteError("InputException", "invalid token or interval")
        start = dt.datetime.strptime(query["from"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
        end = dt.datetime.strptime(query["to"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
        base = self.instruments[self.by_token[token]]["price"]
        out, when, i = [], start, 0
        while when < end and len(out) < 2000:
            o = base + i % 7 - 3
            out.append([when.strftime("%Y-%m-%dT%H:%M:%S%z"), o, o + 2, o - 2, o + 1, 1000 + i])
            when += dt.timedelta(seconds=steps[interval])
            i += 1
        return out

    # ================================================================ ticker
    async def _ticker(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_ticker:
            return web.Response(status=503, text="ticker unavailable")
        if request.query.get("api_key") != self.api_key or request.query.get("access_token") not in self.access_tokens:
            return web.Response(status=403, text="Invalid access token")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._ws[ws] = {"modes": {}}
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._ticker_command(ws, msg.data)
        finally:
            self._ws.pop(ws, None)
        return ws

    def _ticker_command(self, ws: web.WebSocketResponse, text: str) -> None:
        try:
            command = json.loads(text)
            action, value = command["a"], command["v"]
        except (ValueError, KeyError, TypeError):
            asyncio.ensure_future(self._send_text(ws, json.dumps({"type": "error", "data": "Invalid message"})))
            return
        modes = self._ws[ws]["modes"]
        if action == "subscribe":
            for token in value:
                modes.setdefault(int(token), "quote")
        elif action == "unsubscribe":
            for token in value:
                modes.pop(int(token), None)
        elif action == "mode":
            mode, tokens = value
            for token in tokens:
                modes[int(token)] = mode
            self._send_ticks([int(t) for t in tokens], only=ws)

    def _send_ticks(self, tokens: list[int], only: Optional[web.WebSocketResponse] = None) -> None:
        stamp = int(time.time())  # the exchange time of full-mode packets, whole seconds as Kite's
        for ws, state in list(self._ws.items()):
            if only is not None and ws is not only:
                continue
            sent = [t for t in tokens if t in state["modes"]]
            packets = [self._packet(t, state["modes"][t], stamp) for t in sent]
            for token in sent:
                inst = self.instruments[self.by_token[token]]
                self.ticks_sent.append({"instrument_token": token, "mode": state["modes"][token], "time": stamp,
                                        "price": inst["price"], "volume": inst["volume"]})
            if packets:
                frame = struct.pack(">H", len(packets)) + b"".join(struct.pack(">H", len(p)) + p for p in packets)
                asyncio.ensure_future(self._send_bytes(ws, frame))

    def _packet(self, token: int, mode: str, stamp: int) -> bytes:
        inst = self.instruments[self.by_token[token]]
        paise = round(inst["price"] * 100)
        if mode == "ltp":
            return struct.pack(">II", token, paise)
        quote = struct.pack(">11I", token, paise, 1, paise, inst["volume"], 100, 100, paise, paise, paise, paise)
        if mode == "quote":
            return quote
        depth = b"".join(struct.pack(">IIH2x", 10, paise - 5 * (i + 1) if i < 5 else paise + 5 * (i - 4), 1)
                         for i in range(10))
        return quote + struct.pack(">5I", stamp, 0, 0, 0, stamp) + depth

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            for ws in list(self._ws):
                await self._send_bytes(ws, b"\x00")

    @staticmethod
    async def _send_bytes(ws: web.WebSocketResponse, data: bytes) -> None:
        if not ws.closed:
            try:
                await ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                pass  # the client went away; its handler cleans up

    @staticmethod
    async def _send_text(ws: web.WebSocketResponse, data: str) -> None:
        if not ws.closed:
            try:
                await ws.send_str(data)
            except (ConnectionError, RuntimeError):
                pass

    def _close_all_ws(self) -> None:
        for ws in list(self._ws):
            asyncio.ensure_future(ws.close(code=1000, message=b"session expired"))


def _check_ticks(*prices: float) -> None:
    """Refuse a price or trigger off the tick (every instrument here trades in 0.05)."""
    for price in prices:
        paise = price * 100
        if abs(paise - round(paise)) > 1e-6 or round(paise) % round(TICK_SIZE * 100):
            raise KiteError("InputException", f"Tick size for this script is {TICK_SIZE:.2f}. Kindly enter "
                                              "price in the multiple of tick size for this script.")


def _ok(data: Any) -> web.Response:
    return web.json_response({"status": "success", "data": data})


def main() -> None:
    """Run a local Kite by hand: ``python -m tests.kite.server [--walk EPIC] [--seconds S]``."""
    import argparse
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--walk", default="NSE:INFY", help="instrument whose price walks (default NSE:INFY)")
    parser.add_argument("--seconds", type=float, default=3600, help="stop after this long")
    args = parser.parse_args()
    with KiteServer() as server:
        print(json.dumps({"api_root": server.api_root, "ticker_root": server.ticker_root,
                          "api_key": server.api_key, "api_secret": server.api_secret,
                          "request_token": server.issue_request_token()}), flush=True)
        server.start_walk(args.walk)
        try:
            time.sleep(args.seconds)
        except KeyboardInterrupt:
            pass
        print(json.dumps(server.snapshot()), flush=True)


if __name__ == "__main__":
    main()
