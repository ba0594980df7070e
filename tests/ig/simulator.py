"""A local IG simulator: IG's REST trading API plus Lightstreamer TLCP streaming.

Enough of IG's public API for ``requests`` and ``lightstreamer-client-lib`` to work
against it unmodified: session v2 (CST / X-SECURITY-TOKEN), account switching,
accounts, positions, OTC deals with dealReference and confirms, working orders, price
history (``GET /prices/{epic}`` version 3, paged, with the weekly historical-data
allowance in its metadata), and the MARKET / CHART / TRADE streams. Faults are injected by calling methods from the
test (wrong credentials need nothing: just send them).

Run by hand: ``python -m tests.ig.simulator --port 8800`` then point an IG account's
``endpoint_demo`` at ``http://127.0.0.1:8800/gateway/deal``.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from aiohttp import web

from tests.ig.tlcp_server import TLCPServer

log = logging.getLogger(__name__)

BASE = "/gateway/deal"
CHART_SCALES = {"SECOND": 1, "1MINUTE": 60, "5MINUTE": 300, "HOUR": 3600}
# GET /prices resolutions -> seconds.
PRICE_RESOLUTIONS = {"SECOND": 1, "MINUTE": 60, "MINUTE_2": 120, "MINUTE_3": 180, "MINUTE_5": 300,
                     "MINUTE_10": 600, "MINUTE_15": 900, "MINUTE_30": 1800, "HOUR": 3600, "HOUR_2": 7200,
                     "HOUR_3": 10800, "HOUR_4": 14400, "DAY": 86400, "WEEK": 604800}
HISTORY_ALLOWANCE = 10_000  # price points per account per week, as IG's demo accounts get
HISTORY_ALLOWANCE_ERROR = "error.public-api.exceeded-account-historical-data-allowance"
MARKET_FIELDS = ("BID", "OFFER", "HIGH", "LOW", "MID_OPEN", "CHANGE", "CHANGE_PCT",
                 "UPDATE_TIME", "MARKET_DELAY", "MARKET_STATE")
TOKEN_ERRORS = "error.security.client-token-invalid"
ACCOUNT = web.RequestKey("account", str)
CST = web.RequestKey("cst", str)


@dataclass
class Market:
    """One instrument's quote."""

    epic: str
    bid: float
    offer: float
    name: str = ""
    expiry: str = "-"
    open_mid: float = 0.0
    high: float = 0.0
    low: float = 0.0
    state: str = "TRADEABLE"
    bars: dict = field(default_factory=dict)  # scale -> current bar dict

    @property
    def mid(self) -> float:
        return (self.bid + self.offer) / 2


@dataclass
class Account:
    """One IG account of the simulated client."""

    account_id: str
    name: str
    balance: float
    currency: str = "GBP"
    preferred: bool = False


class IGSimulator:
    """IG REST API and Lightstreamer server on 127.0.0.1, driven from tests."""

    def __init__(self, port: int = 0, user: str = "trader", password: str = "s3cret-pass",
                 api_key: str = "key-123", accounts: Optional[list[Account]] = None,
                 markets: Optional[dict[str, tuple[float, float]]] = None, margin_factor: float = 0.05,
                 keepalive_ms: int = 2000, tick_interval: float = 0.0):
        self.port = port
        self.user, self.password, self.api_key = user, password, api_key
        self.accounts = {a.account_id: a for a in (accounts or [
            Account("ABC01", "Spread bet", 5000.0, preferred=True),
            Account("XYZ02", "CFD", 10000.0)])}
        self.markets = {epic: Market(epic, bid, offer, name=epic, open_mid=(bid + offer) / 2,
                                     high=offer, low=bid)
                        for epic, (bid, offer) in (markets or {
                            "CS.D.EURUSD.CFD.IP": (1.08500, 1.08510),
                            "CS.D.GBPUSD.CFD.IP": (1.26500, 1.26515),
                            "IX.D.FTSE.DAILY.IP": (7500.0, 7501.0)}).items()}
        self.margin_factor = margin_factor
        self.tick_interval = tick_interval
        self.tokens: dict[str, dict] = {}  # CST -> {"xst", "account"}
        self.positions: dict[str, dict] = {}
        self.working: dict[str, dict] = {}
        self.confirms: dict[str, dict] = {}
        self.deal_references: Counter = Counter()  # client dealReferences received for deals
        self.deals: dict[str, dict] = {}  # client dealReference -> {"status", "size"}: the broker's record
        self.requests: list[tuple[str, str]] = []
        self.realized: dict[str, float] = {}
        self._deal_ids = itertools.count(1)
        self._reject_next: list[str] = []
        self._fail_rest: list[int] = []
        self._swallow_deals = 0
        self.refuse_rest = False
        self.mute_trade_stream = False
        self.trading_allowance = 0  # trading requests per account per minute; 0 unlimited
        self._trading_times: dict[str, list[float]] = {}  # True: TRADE confirms and updates are not streamed
        self.history_allowance = HISTORY_ALLOWANCE  # weekly price points per account
        self.history_used: Counter = Counter()  # account -> price points served this week
        self.price_requests: list[dict] = []  # the query of every GET /prices
        self._started = time.time()
        self.tlcp = TLCPServer(self._ls_authenticate, self._snapshot, self._valid_item, keepalive_ms)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Optional[web.AppRunner] = None
        self._ready = threading.Event()
        self._ticker: Optional[asyncio.Task] = None

    # ================================================================ lifecycle
    @property
    def rest_url(self) -> str:
        """Base URL of the REST API (IG's ``.../gateway/deal``)."""
        return f"http://127.0.0.1:{self.port}{BASE}"

    @property
    def ls_url(self) -> str:
        """Lightstreamer endpoint announced in the session response."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "IGSimulator":
        """Serve on a background thread; return once listening."""
        self._thread = threading.Thread(target=self._serve, name="ig-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("IG simulator did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def restart(self) -> None:
        """Stop serving and serve again on the same port, as a restarted IG would: every
        stream and connection drops; accounts, positions, working orders and sessions stay."""
        self.stop()
        self._ready.clear()
        self.start()

    def __enter__(self) -> "IGSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._startup())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _startup(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/lightstreamer", self.tlcp.handle)
        app.router.add_post("/lightstreamer/bind_session.txt", self.tlcp.handle_http_bind)
        r = app.router
        r.add_post(BASE + "/session", self._login)
        r.add_put(BASE + "/session", self._switch)
        r.add_get(BASE + "/session", self._session_details)
        r.add_delete(BASE + "/session", self._logout)
        r.add_get(BASE + "/accounts", self._accounts)
        r.add_get(BASE + "/positions", self._positions)
        r.add_post(BASE + "/positions/otc", self._position_otc)
        r.add_put(BASE + "/positions/otc/{deal_id}", self._amend_position)
        r.add_get(BASE + "/confirms/{ref}", self._confirm)
        r.add_get(BASE + "/workingorders", self._working_orders)
        r.add_post(BASE + "/workingorders/otc", self._create_working)
        r.add_post(BASE + "/workingorders/otc/{deal_id}", self._delete_working)
        r.add_delete(BASE + "/workingorders/otc/{deal_id}", self._delete_working)
        r.add_put(BASE + "/workingorders/otc/{deal_id}", self._amend_working)
        r.add_get(BASE + "/prices/{epic}", self._prices)
        self._released = asyncio.Event()
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        if self.tick_interval > 0:
            self._ticker = asyncio.ensure_future(self._tick_forever())

    async def _shutdown(self) -> None:
        if self._ticker:
            self._ticker.cancel()
        self._released.set()
        await self.tlcp.drop_all()
        await self._runner.cleanup()

    def _call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # ================================================================ test controls
    def push_price(self, epic: str, bid: float, offer: float, time_ms: Optional[int] = None) -> None:
        """Move a market: stream MARKET and CHART updates, trigger working orders."""
        self._call(self._price(epic, bid, offer, time_ms))

    def expire_tokens(self) -> None:
        """Invalidate every CST/X-SECURITY-TOKEN issued so far."""
        self._call(self._sync(self.tokens.clear))

    def drop_streams(self) -> int:
        """Cut every Lightstreamer connection abruptly; return how many were cut."""
        return self._call(self.tlcp.drop_all())

    def reject_next_deal(self, reason: str) -> None:
        """Make the next deal REJECTED with IG reason ``reason`` (e.g. MARKET_CLOSED)."""
        self._reject_next.append(reason)

    def fail_next_rest(self, status: int = 503, count: int = 1) -> None:
        """Answer the next ``count`` REST calls (other than login) with HTTP ``status``."""
        self._fail_rest.extend([status] * count)

    def swallow_next_deal_response(self, count: int = 1) -> None:
        """Take the next deal but never answer the HTTP request (a lost response)."""
        self._swallow_deals += count

    def push_trade_raw(self, account: str, **fields: str) -> None:
        """Stream raw TRADE fields (CONFIRMS / OPU / WOU), garbage included."""
        self._call(self._stream_trade(account, **fields))

    def subscribed_items(self) -> set[str]:
        """Items the live Lightstreamer sessions are subscribed to."""
        return self._call(self._sync(self.tlcp.subscribed_items))

    def sessions_created(self) -> int:
        """How many Lightstreamer sessions have been opened."""
        return self.tlcp.sessions_created

    @staticmethod
    async def _sync(fn):
        return fn()

    # ================================================================ REST plumbing
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        path = request.path
        if not path.startswith(BASE):
            return await handler(request)
        method = request.headers.get("_method", request.method).upper()
        self.requests.append((method, path[len(BASE):]))
        if request.headers.get("X-IG-API-KEY") != self.api_key:
            return _error(403, "error.security.api-key-invalid")
        if path == BASE + "/session" and request.method == "POST":
            return await handler(request)
        if self.refuse_rest:
            return _error(503, "error.service.unavailable")
        if self._fail_rest:
            return _error(self._fail_rest.pop(0), "error.service.unavailable")
        token = self.tokens.get(request.headers.get("CST", ""))
        if token is None or token["xst"] != request.headers.get("X-SECURITY-TOKEN"):
            return _error(401, TOKEN_ERRORS)
        request[ACCOUNT] = token["account"]
        if self._over_allowance(token["account"], method, path):
            return _error(403, "error.public-api.exceeded-account-trading-allowance")
        request[CST] = request.headers["CST"]
        if request.method == "POST" and method == "DELETE":
            if path == BASE + "/positions/otc":
                return await self._close_position(request)
            return await self._delete_working(request)
        return await handler(request)

    def _over_allowance(self, account: str, method: str, path: str) -> bool:
        trading = method != "GET" and ("/positions/otc" in path or "/workingorders/otc" in path)
        if not trading or not self.trading_allowance:
            return False
        now = time.monotonic()
        recent = [t for t in self._trading_times.get(account, []) if now - t < 60]
        recent.append(now)
        self._trading_times[account] = recent
        return len(recent) > self.trading_allowance

    async def _login(self, request: web.Request) -> web.Response:
        if request.headers.get("Version") != "2":
            return _error(400, "error.request.version-not-supported")
        body = await _json(request)
        if body.get("identifier") != self.user or body.get("password") != self.password:
            return _error(401, "error.security.invalid-details")
        account = next(a for a in self.accounts.values() if a.preferred)
        cst, xst = secrets.token_hex(16), secrets.token_hex(16)
        self.tokens[cst] = {"xst": xst, "account": account.account_id}
        info = self._account_balance(account)
        payload = {"accountType": "CFD", "accountInfo": {
            "balance": info["balance"], "deposit": info["deposit"],
            "profitLoss": info["profitLoss"], "available": info["available"]},
            "currencyIsoCode": account.currency, "currencySymbol": "£",
            "currentAccountId": account.account_id, "lightstreamerEndpoint": self.ls_url,
            "accounts": [{"accountId": a.account_id, "accountName": a.name, "preferred": a.preferred,
                          "accountType": "CFD"} for a in self.accounts.values()],
            "clientId": "100001", "timezoneOffset": 0, "hasActiveDemoAccounts": True,
            "hasActiveLiveAccounts": False, "trailingStopsEnabled": False,
            "reroutingEnvironment": None, "dealingEnabled": True}
        return web.json_response(payload, headers={"CST": cst, "X-SECURITY-TOKEN": xst})

    async def _switch(self, request: web.Request) -> web.Response:
        body = await _json(request)
        target = body.get("accountId")
        if target not in self.accounts:
            return _error(400, "error.switch.accountId-invalid")
        if target == request[ACCOUNT]:
            return _error(412, "error.switch.accountId-must-be-different")
        self.tokens[request[CST]]["account"] = target
        return web.json_response({"trailingStopsEnabled": False, "dealingEnabled": True,
                                  "hasActiveDemoAccounts": True, "hasActiveLiveAccounts": False})

    async def _session_details(self, request: web.Request) -> web.Response:
        return web.json_response({"clientId": "100001", "accountId": request[ACCOUNT],
                                  "timezoneOffset": 0, "locale": "en_GB", "currency": "GBP",
                                  "lightstreamerEndpoint": self.ls_url})

    async def _logout(self, request: web.Request) -> web.Response:
        self.tokens.pop(request[CST], None)
        return web.Response(status=204)

    async def _accounts(self, request: web.Request) -> web.Response:
        rows = []
        for a in self.accounts.values():
            rows.append({"accountId": a.account_id, "accountName": a.name, "accountAlias": None,
                         "status": "ENABLED", "accountType": "CFD", "preferred": a.preferred,
                         "balance": self._account_balance(a), "currency": a.currency,
                         "canTransferFrom": True, "canTransferTo": True})
        return web.json_response({"accounts": rows})

    async def _positions(self, request: web.Request) -> web.Response:
        rows = [{"position": _position_view(p), "market": self._market_view(p["epic"])}
                for p in self.positions.values() if p["account"] == request[ACCOUNT]]
        return web.json_response({"positions": rows})

    async def _working_orders(self, request: web.Request) -> web.Response:
        rows = [{"workingOrderData": _working_view(w), "marketData": self._market_view(w["epic"])}
                for w in self.working.values() if w["account"] == request[ACCOUNT]]
        return web.json_response({"workingOrders": rows})

    async def _confirm(self, request: web.Request) -> web.Response:
        confirm = self.confirms.get(request.match_info["ref"])
        if confirm is None or confirm["_account"] != request[ACCOUNT]:
            return _error(404, "error.confirms.deal-not-found")
        return web.json_response({k: v for k, v in confirm.items() if not k.startswith("_")})

    # ================================================================ deals
    async def _position_otc(self, request: web.Request) -> web.Response:
        body = await _json(request)
        problem = _require(body, "epic", "direction", "size", "orderType", "currencyCode", "expiry")
        if problem:
            return _error(400, problem)
        ref = str(body.get("dealReference") or _new_ref())
        if ref in self.confirms or self.deal_references[ref]:
            return _error(400, "error.service.create.otc.position.dealReference.duplicate")
        self.deal_references[ref] += 1
        account = request[ACCOUNT]
        reason = self._deal_problem(account, body)
        if reason:
            confirm = self._store_confirm(account, ref, body, "REJECTED", reason, None, "OPEN")
            self.deals[ref] = {"status": "rejected", "size": 0.0}
        else:
            self.deals[ref] = {"status": "filled", "size": float(body["size"])}
            price = self._fill_price(body["epic"], body["direction"])
            deal_id = self._open(account, ref, body["epic"], body["direction"], float(body["size"]), price,
                                 body.get("stopLevel"), body.get("limitLevel"), bool(body.get("forceOpen")))
            confirm = self._store_confirm(account, ref, body, "ACCEPTED", "SUCCESS", deal_id, "OPEN",
                                          level=price)
        await self._stream_trade(account, CONFIRMS=json.dumps(_public(confirm)))
        return await self._deal_answer(ref)

    async def _close_position(self, request: web.Request) -> web.Response:
        body = await _json(request)
        account = request[ACCOUNT]
        ref = _new_ref()
        direction, size = body.get("direction"), float(body.get("size") or 0)
        if body.get("dealId"):
            targets = [p for p in [self.positions.get(body["dealId"])] if p and p["account"] == account]
        else:
            targets = sorted((p for p in self.positions.values() if p["account"] == account
                              and p["epic"] == body.get("epic") and p["direction"] != direction),
                             key=lambda p: p["created"])
        available = sum(p["size"] for p in targets)
        if not targets or direction not in ("BUY", "SELL") or any(p["direction"] == direction for p in targets):
            confirm = self._store_confirm(account, ref, body, "REJECTED", "POSITION_NOT_FOUND", None, None)
        elif size <= 0 or size > available + 1e-9:
            confirm = self._store_confirm(account, ref, body, "REJECTED", "POSITION_NOT_AVAILABLE_TO_CLOSE",
                                          None, None)
        elif self._reject_next:
            confirm = self._store_confirm(account, ref, body, "REJECTED", self._reject_next.pop(0), None, None)
        else:
            epic = targets[0]["epic"]
            price = self._fill_price(epic, direction)
            affected, profit = await self._reduce(account, targets, size, price)
            status = "FULLY_CLOSED" if size >= available - 1e-9 else "PARTIALLY_CLOSED"
            body = dict(body, epic=epic)
            confirm = self._store_confirm(account, ref, body, "ACCEPTED", "SUCCESS", affected[0]["dealId"],
                                          status, level=price, affected=affected, profit=profit)
        await self._stream_trade(account, CONFIRMS=json.dumps(_public(confirm)))
        return await self._deal_answer(ref)

    async def _amend_position(self, request: web.Request) -> web.Response:
        body = await _json(request)
        account, ref = request[ACCOUNT], _new_ref()
        position = self.positions.get(request.match_info["deal_id"])
        if position is None or position["account"] != account:
            return _error(404, "error.service.otc.position.notfound")
        stop, limit = body.get("stopLevel"), body.get("limitLevel")
        market = self.markets[position["epic"]]
        exit_price = market.bid if position["direction"] == "BUY" else market.offer
        wrong = ((stop is not None and (stop >= exit_price if position["direction"] == "BUY" else stop <= exit_price))
                 or (limit is not None and (limit <= exit_price if position["direction"] == "BUY"
                                            else limit >= exit_price)))
        view = dict(position, epic=position["epic"])
        if wrong:
            confirm = self._store_confirm(account, ref, view, "REJECTED", "ATTACHED_ORDER_LEVEL_ERROR",
                                          position["dealId"], "AMENDED")
        else:
            position["stopLevel"], position["limitLevel"] = stop, limit
            confirm = self._store_confirm(account, ref, view, "ACCEPTED", "SUCCESS", position["dealId"],
                                          "AMENDED", level=position["level"])
            await self._stream_trade(account, OPU=json.dumps(_opu(position, "UPDATED")))
        await self._stream_trade(account, CONFIRMS=json.dumps(_public(confirm)))
        return web.json_response({"dealReference": ref})

    async def _create_working(self, request: web.Request) -> web.Response:
        body = await _json(request)
        problem = _require(body, "epic", "direction", "size", "level", "type", "currencyCode",
                           "expiry", "timeInForce")
        if problem:
            return _error(400, problem)
        ref = str(body.get("dealReference") or _new_ref())
        if ref in self.confirms or self.deal_references[ref]:
            return _error(400, "error.service.create.workingorder.dealReference.duplicate")
        self.deal_references[ref] += 1
        account = request[ACCOUNT]
        reason = self._deal_problem(account, body)
        if reason:
            confirm = self._store_confirm(account, ref, body, "REJECTED", reason, None, "OPEN")
            self.deals[ref] = {"status": "rejected", "size": 0.0}
        else:
            self.deals[ref] = {"status": "working", "size": 0.0}
            deal_id = self._new_deal_id()
            order = {"dealId": deal_id, "dealReference": ref, "account": account, "epic": body["epic"],
                     "direction": body["direction"], "size": float(body["size"]),
                     "level": float(body["level"]), "type": body["type"],
                     "timeInForce": body["timeInForce"], "stopLevel": body.get("stopLevel"),
                     "limitLevel": body.get("limitLevel"), "created": time.time(),
                     "currency": body["currencyCode"], "forceOpen": bool(body.get("forceOpen", True))}
            self.working[deal_id] = order
            confirm = self._store_confirm(account, ref, body, "ACCEPTED", "SUCCESS", deal_id, "OPEN",
                                          level=order["level"])
            await self._stream_trade(account, WOU=json.dumps(_wou(order, "OPEN")))
        await self._stream_trade(account, CONFIRMS=json.dumps(_public(confirm)))
        return await self._deal_answer(ref)

    async def _delete_working(self, request: web.Request) -> web.Response:
        account, ref = request[ACCOUNT], _new_ref()
        order = self.working.get(request.match_info.get("deal_id", ""))
        if order is None or order["account"] != account:
            return _error(404, "error.service.workingorder.notfound")
        del self.working[order["dealId"]]
        self.deals[order["dealReference"]] = {"status": "cancelled", "size": 0.0}
        confirm = self._store_confirm(account, ref, order, "ACCEPTED", "SUCCESS", order["dealId"],
                                      "DELETED", level=order["level"])
        await self._stream_trade(account, WOU=json.dumps(_wou(order, "DELETED")),)
        await self._stream_trade(account, CONFIRMS=json.dumps(_public(confirm)))
        return web.json_response({"dealReference": ref})

    async def _amend_working(self, request: web.Request) -> web.Response:
        body = await _json(request)
        account, ref = request[ACCOUNT], _new_ref()
        order = self.working.get(request.match_info["deal_id"])
        if order is None or order["account"] != account:
            return _error(404, "error.service.workingorder.notfound")
        for key in ("level", "stopLevel", "limitLevel", "type", "timeInForce"):
            if key in body:
                order[key] = body[key]
        confirm = self._store_confirm(account, ref, order, "ACCEPTED", "SUCCESS", order["dealId"],
                                      "AMENDED", level=order["level"])
        await self._stream_trade(account, WOU=json.dumps(_wou(order, "UPDATED")))
        await self._stream_trade(account, CONFIRMS=json.dumps(_public(confirm)))
        return web.json_response({"dealReference": ref})

    async def _prices(self, request: web.Request) -> web.Response:
        """GET /prices/{epic}?resolution&from&to&pageSize&pageNumber (version 3)."""
        if request.headers.get("Version") != "3":
            return _error(400, "error.request.invalid.version")
        market = self.markets.get(request.match_info["epic"])
        if market is None:
            return _error(404, "error.service.marketdata.instrument.epic.unavailable")
        query = request.query
        self.price_requests.append(dict(query))
        span = PRICE_RESOLUTIONS.get(query.get("resolution", "MINUTE"))
        try:
            start = _parse_ig_time(query["from"])
            last = _parse_ig_time(query["to"])
            page_size = int(query.get("pageSize", 20))
            page_number = int(query.get("pageNumber", 1))
        except (KeyError, ValueError):
            return _error(400, "error.malformed.date")
        if span is None or page_size < 0 or page_number < 1:
            return _error(400, "error.invalid.resolution" if span is None else "error.invalid.page")
        moments = [t for t in range(-(-start // span) * span, last + 1, span) if _market_open(t)]
        page_size = page_size or len(moments) or 1
        pages = max(1, -(-len(moments) // page_size))
        chosen = moments[(page_number - 1) * page_size:page_number * page_size]
        account = request[ACCOUNT]
        if self.history_used[account] + len(chosen) > self.history_allowance:
            return _error(403, HISTORY_ALLOWANCE_ERROR)
        self.history_used[account] += len(chosen)
        half_spread = (market.offer - market.bid) / 2
        rows = [_price_row(market.epic, market.open_mid, half_spread, t, span) for t in chosen]
        return web.json_response({"prices": rows, "instrumentType": "CURRENCIES", "metadata": {
            "allowance": {"remainingAllowance": self.history_allowance - self.history_used[account],
                          "totalAllowance": self.history_allowance,
                          "allowanceExpiry": max(0, int(7 * 86400 - (time.time() - self._started)))},
            "size": len(chosen), "pageData": {"pageSize": page_size, "pageNumber": page_number,
                                              "totalPages": pages}}})

    async def _deal_answer(self, ref: str) -> web.Response:
        if self._swallow_deals:
            self._swallow_deals -= 1
            # Never answer (until shutdown): the client times out, the deal stands.
            await self._released.wait()
        return web.json_response({"dealReference": ref})

    # ================================================================ book keeping
    def _deal_problem(self, account: str, body: dict) -> str:
        market = self.markets.get(body.get("epic"))
        if market is None:
            return "INSTRUMENT_NOT_FOUND"
        if self._reject_next:
            return self._reject_next.pop(0)
        if market.state != "TRADEABLE":
            return "MARKET_CLOSED"
        size = float(body.get("size") or 0)
        if size < 0.1:
            return "MINIMUM_ORDER_SIZE_ERROR"
        if size * market.mid * self.margin_factor > self._account_balance(self.accounts[account])["available"]:
            return "INSUFFICIENT_FUNDS"
        return ""

    def _fill_price(self, epic: str, direction: str) -> float:
        market = self.markets[epic]
        return market.offer if direction == "BUY" else market.bid

    def _open(self, account: str, ref: str, epic: str, direction: str, size: float, price: float,
              stop, limit, force_open: bool, deal_id: Optional[str] = None) -> str:
        deal_id = deal_id or self._new_deal_id()
        opposite = [p for p in self.positions.values() if p["account"] == account and p["epic"] == epic
                    and p["direction"] != direction]
        if opposite and not force_open:
            # IG nets an opposite deal against open positions unless forceOpen is set.
            netted = min(size, sum(p["size"] for p in opposite))
            asyncio.ensure_future(self._reduce(account, sorted(opposite, key=lambda p: p["created"]),
                                               netted, price))
            size -= netted
            if size <= 1e-9:
                return deal_id
        position = {"dealId": deal_id, "dealReference": ref, "account": account, "epic": epic,
                    "direction": direction, "size": size, "level": price, "stopLevel": stop,
                    "limitLevel": limit, "created": time.time(), "currency": "GBP"}
        self.positions[deal_id] = position
        asyncio.ensure_future(self._stream_trade(account, OPU=json.dumps(_opu(position, "OPEN"))))
        return deal_id

    async def _reduce(self, account: str, targets: list[dict], size: float, price: float,
                      by_ig: bool = False):
        affected, profit, left = [], 0.0, size
        for position in targets:
            if left <= 1e-9:
                break
            take = min(left, position["size"])
            sign = 1 if position["direction"] == "BUY" else -1
            profit += (price - position["level"]) * take * sign
            left -= take
            position["size"] -= take
            if position["size"] <= 1e-9:
                del self.positions[position["dealId"]]
                affected.append({"dealId": position["dealId"], "status": "FULLY_CLOSED"})
                opu = _opu(position, "DELETED")
                if by_ig:  # IG closed it on its stop / limit: the update says where and how much
                    opu.update(level=price, size=take)
                await self._stream_trade(account, OPU=json.dumps(opu))
            else:
                affected.append({"dealId": position["dealId"], "status": "PARTIALLY_CLOSED"})
                await self._stream_trade(account, OPU=json.dumps(_opu(position, "UPDATED")))
        self.realized[account] = self.realized.get(account, 0.0) + profit
        return affected, round(profit, 10)

    def _store_confirm(self, account: str, ref: str, body: dict, deal_status: str, reason: str,
                       deal_id: Optional[str], status: Optional[str], level: Optional[float] = None,
                       affected: Optional[list] = None, profit: Optional[float] = None) -> dict:
        confirm = {"_account": account, "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   "status": status if deal_status == "ACCEPTED" else None, "reason": reason,
                   "dealStatus": deal_status, "epic": body.get("epic"), "expiry": body.get("expiry", "-"),
                   "dealReference": ref, "dealId": deal_id or "DIAAAA" + ref[-8:],
                   "affectedDeals": affected or ([{"dealId": deal_id, "status": "OPENED"}] if deal_id else []),
                   "level": level, "size": body.get("size"), "direction": body.get("direction"),
                   "stopLevel": body.get("stopLevel"), "limitLevel": body.get("limitLevel"),
                   "stopDistance": None, "limitDistance": None, "guaranteedStop": False,
                   "trailingStop": False, "profit": profit, "profitCurrency": "GBP" if profit is not None else None}
        self.confirms[ref] = confirm
        return confirm

    def _account_balance(self, account: Account) -> dict:
        pnl = deposit = 0.0
        for p in self.positions.values():
            if p["account"] != account.account_id:
                continue
            market = self.markets[p["epic"]]
            sign = 1 if p["direction"] == "BUY" else -1
            mark = market.bid if sign > 0 else market.offer
            pnl += (mark - p["level"]) * p["size"] * sign
            deposit += p["size"] * market.mid * self.margin_factor
        balance = account.balance + self.realized.get(account.account_id, 0.0)
        return {"balance": round(balance, 10), "deposit": round(deposit, 10), "profitLoss": round(pnl, 10),
                "available": round(balance + pnl - deposit, 10)}

    def _market_view(self, epic: str) -> dict:
        m = self.markets[epic]
        return {"instrumentName": m.name, "expiry": m.expiry, "epic": epic, "instrumentType": "CURRENCIES",
                "lotSize": 1.0, "high": m.high, "low": m.low, "percentageChange": 0.0, "netChange": 0.0,
                "bid": m.bid, "offer": m.offer, "updateTime": time.strftime("%H:%M:%S"),
                "delayTime": 0, "streamingPricesAvailable": True, "marketStatus": m.state,
                "scalingFactor": 1}

    def _new_deal_id(self) -> str:
        return f"DIAAAA{next(self._deal_ids):08d}"

    # ================================================================ streaming
    def _ls_authenticate(self, user: str, password: str) -> bool:
        for cst, token in self.tokens.items():
            if token["account"] == user and password == f"CST-{cst}|XST-{token['xst']}":
                return True
        return False

    def _valid_item(self, item: str) -> bool:
        parts = item.split(":")
        if parts[0] == "MARKET" and len(parts) == 2:
            return parts[1] in self.markets
        if parts[0] == "CHART" and len(parts) == 3:
            return parts[1] in self.markets and (parts[2] in CHART_SCALES or parts[2] == "TICK")
        if parts[0] in ("TRADE", "ACCOUNT") and len(parts) == 2:
            return parts[1] in self.accounts
        return False

    def _snapshot(self, item: str) -> Optional[dict]:
        parts = item.split(":")
        market = self.markets.get(parts[1]) if len(parts) > 1 else None
        if parts[0] == "MARKET" and market:
            return self._market_fields(market)
        if parts[0] == "CHART" and market and parts[2] in market.bars:
            return market.bars[parts[2]]
        return None

    def _market_fields(self, m: Market) -> dict:
        change = m.mid - m.open_mid
        return {"BID": _num(m.bid), "OFFER": _num(m.offer), "HIGH": _num(m.high), "LOW": _num(m.low),
                "MID_OPEN": _num(m.open_mid), "CHANGE": _num(change),
                "CHANGE_PCT": _num(change / m.open_mid * 100 if m.open_mid else 0),
                "UPDATE_TIME": time.strftime("%H:%M:%S"), "MARKET_DELAY": "0", "MARKET_STATE": m.state}

    async def _price(self, epic: str, bid: float, offer: float, time_ms: Optional[int]) -> None:
        m = self.markets[epic]
        m.bid, m.offer = bid, offer
        m.high, m.low = max(m.high, offer), min(m.low, bid)
        now = int(time_ms if time_ms is not None else time.time() * 1000)
        await self.tlcp.publish(f"MARKET:{epic}", self._market_fields(m))
        for scale, seconds in CHART_SCALES.items():
            start = now // (seconds * 1000) * (seconds * 1000)
            bar = m.bars.get(scale)
            if bar is not None and int(bar["UTM"]) < start:
                bar["CONS_END"] = "1"
                await self.tlcp.publish(f"CHART:{epic}:{scale}", bar)
                bar = None
            if bar is None or int(bar["UTM"]) > start:
                bar = {"UTM": str(start), "BID_OPEN": _num(bid), "BID_HIGH": _num(bid), "BID_LOW": _num(bid),
                       "OFR_OPEN": _num(offer), "OFR_HIGH": _num(offer), "OFR_LOW": _num(offer),
                       "LTV": "0", "CONS_TICK_COUNT": "0"}
            bar.update(BID_CLOSE=_num(bid), OFR_CLOSE=_num(offer), CONS_END="0",
                       BID_HIGH=_num(max(float(bar["BID_HIGH"]), bid)), BID_LOW=_num(min(float(bar["BID_LOW"]), bid)),
                       OFR_HIGH=_num(max(float(bar["OFR_HIGH"]), offer)),
                       OFR_LOW=_num(min(float(bar["OFR_LOW"]), offer)),
                       LTV=str(int(bar["LTV"]) + 1), CONS_TICK_COUNT=str(int(bar["CONS_TICK_COUNT"]) + 1))
            m.bars[scale] = bar
            await self.tlcp.publish(f"CHART:{epic}:{scale}", bar)
        await self._trigger_working(epic)
        await self._trigger_attached_stops(epic)

    async def _trigger_working(self, epic: str) -> None:
        m = self.markets[epic]
        for order in [w for w in self.working.values() if w["epic"] == epic]:
            buy = order["direction"] == "BUY"
            price = m.offer if buy else m.bid
            if order["type"] == "LIMIT":
                hit = price <= order["level"] if buy else price >= order["level"]
            else:
                hit = price >= order["level"] if buy else price <= order["level"]
            if not hit:
                continue
            del self.working[order["dealId"]]
            self.deals[order["dealReference"]] = {"status": "filled", "size": order["size"]}
            await self._stream_trade(order["account"], WOU=json.dumps(_wou(order, "DELETED")))
            self._open(order["account"], order["dealReference"], epic, order["direction"], order["size"],
                       order["level"] if order["type"] == "LIMIT" else price, order["stopLevel"],
                       order["limitLevel"], order.get("forceOpen", True), deal_id=order["dealId"])

    async def _trigger_attached_stops(self, epic: str) -> None:
        """Close positions whose attached stop (stopLevel) or limit (limitLevel) the price
        reached, at the price, as IG does: the trade stream carries the position DELETED."""
        m = self.markets[epic]
        for position in [p for p in self.positions.values() if p["epic"] == epic]:
            buy = position["direction"] == "BUY"
            exit_price = m.bid if buy else m.offer
            stop, limit = position.get("stopLevel"), position.get("limitLevel")
            stopped = stop is not None and (exit_price <= stop if buy else exit_price >= stop)
            limited = limit is not None and (exit_price >= limit if buy else exit_price <= limit)
            if stopped or limited:
                await self._reduce(position["account"], [position], position["size"], exit_price, by_ig=True)

    async def _stream_trade(self, account: str, **fields: str) -> None:
        if self.mute_trade_stream:
            return
        values = {"CONFIRMS": None, "OPU": None, "WOU": None}
        values.update(fields)
        await self.tlcp.publish(f"TRADE:{account}", values)

    async def _tick_forever(self) -> None:
        rng = random.Random(1)
        while True:
            await asyncio.sleep(self.tick_interval)
            for epic, m in list(self.markets.items()):
                step = m.mid * rng.gauss(0, 0.0002)
                spread = m.offer - m.bid
                await self._price(epic, round(m.bid + step, 5), round(m.bid + step + spread, 5), None)


# ==================================================================== helpers
def _parse_ig_time(text: str) -> int:
    """Epoch seconds of IG's ``yyyy-MM-ddTHH:mm:ss`` (UTC)."""
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def _market_open(seconds: int) -> bool:
    """FX trades from Sunday 22:00 to Friday 22:00 UTC; the simulator keeps it simpler: not at weekends."""
    return datetime.fromtimestamp(seconds, timezone.utc).weekday() < 5


def history_mid(epic: str, base: float, seconds: int) -> float:
    """The simulator's deterministic historical mid of ``epic`` at ``seconds``."""
    phase = sum(epic.encode()) % 97
    return base * (1 + 0.003 * math.sin(2 * math.pi * seconds / 86_400 + phase)
                   + 0.001 * math.sin(2 * math.pi * seconds / 5_000))


def _price_row(epic: str, base: float, half_spread: float, seconds: int, span: int) -> dict:
    """One row of IG's v3 ``prices``: bid/ask/lastTraded for open, high, low and close."""
    open_mid, close_mid = history_mid(epic, base, seconds), history_mid(epic, base, seconds + span)
    high_mid, low_mid = max(open_mid, close_mid) * 1.0001, min(open_mid, close_mid) * 0.9999

    def point(mid: float) -> dict:
        return {"bid": round(mid - half_spread, 6), "ask": round(mid + half_spread, 6), "lastTraded": None}

    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return {"snapshotTime": moment.strftime("%Y/%m/%d %H:%M:%S"), "snapshotTimeUTC": moment.strftime("%Y-%m-%dT%H:%M:%S"),
            "openPrice": point(open_mid), "closePrice": point(close_mid), "highPrice": point(high_mid),
            "lowPrice": point(low_mid), "lastTradedVolume": 100 + seconds // span % 50}


def _error(status: int, code: str) -> web.Response:
    return web.json_response({"errorCode": code}, status=status)


async def _json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _require(body: dict, *names: str) -> str:
    for name in names:
        if body.get(name) in (None, ""):
            return f"validation.null-not-allowed.request.{name}"
    if body.get("direction") not in ("BUY", "SELL"):
        return "validation.invalid.request.direction"
    try:
        if float(body["size"]) <= 0:
            return "validation.invalid.request.size"
    except (TypeError, ValueError):
        return "validation.invalid.request.size"
    if (body.get("stopLevel") is not None or body.get("limitLevel") is not None) and not body.get("forceOpen"):
        return "validation.forceOpen.required-with-stop-or-limit"
    return ""


def _new_ref() -> str:
    return "SIM" + secrets.token_hex(8).upper()


def _num(value: float) -> str:
    return f"{value:.10g}"


def _public(confirm: dict) -> dict:
    return {k: v for k, v in confirm.items() if not k.startswith("_")}


def _position_view(p: dict) -> dict:
    return {"contractSize": 1.0, "createdDate": time.strftime("%Y/%m/%d %H:%M:%S:000", time.gmtime(p["created"])),
            "createdDateUTC": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(p["created"])),
            "dealId": p["dealId"], "dealReference": p["dealReference"], "size": p["size"],
            "direction": p["direction"], "limitLevel": p["limitLevel"], "level": p["level"],
            "currency": p["currency"], "controlledRisk": False, "stopLevel": p["stopLevel"],
            "trailingStep": None, "trailingStopDistance": None, "limitedRiskPremium": None}


def _working_view(w: dict) -> dict:
    return {"dealId": w["dealId"], "direction": w["direction"], "epic": w["epic"], "orderSize": w["size"],
            "orderLevel": w["level"], "timeInForce": w["timeInForce"], "goodTillDate": None,
            "goodTillDateISO": None, "createdDate": "", "createdDateUTC": "", "guaranteedStop": False,
            "orderType": w["type"], "stopDistance": None, "limitDistance": None,
            "currencyCode": w["currency"], "dma": False, "dealReference": w["dealReference"],
            "stopLevel": w["stopLevel"], "limitLevel": w["limitLevel"]}


def _opu(p: dict, status: str) -> dict:
    return {"dealReference": p["dealReference"], "dealId": p["dealId"], "direction": p["direction"],
            "epic": p["epic"], "status": status, "dealStatus": "ACCEPTED", "level": p["level"],
            "size": p["size"], "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "channel": "PublicRestOTC",
            "expiry": "-", "currency": p["currency"], "stopLevel": p["stopLevel"], "limitLevel": p["limitLevel"],
            "guaranteedStop": False, "trailingStop": False}


def _wou(w: dict, status: str) -> dict:
    return {"dealReference": w["dealReference"], "dealId": w["dealId"], "direction": w["direction"],
            "epic": w["epic"], "status": status, "dealStatus": "ACCEPTED", "level": w["level"],
            "size": w["size"], "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "channel": "PublicRestOTC",
            "expiry": "-", "currency": w["currency"], "stopLevel": w["stopLevel"], "limitLevel": w["limitLevel"],
            "orderType": w["type"], "timeInForce": w["timeInForce"], "goodTillDate": None,
            "guaranteedStop": False}


def main(argv: Optional[list[str]] = None) -> None:
    """Run the simulator in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Local IG REST + Lightstreamer simulator")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--tick", type=float, default=0.5, help="seconds between random price ticks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    sim = IGSimulator(port=args.port, tick_interval=args.tick).start()
    print(f"IG simulator: REST {sim.rest_url}  user={sim.user} apiKey={sim.api_key} "
          f"accounts={','.join(sim.accounts)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
