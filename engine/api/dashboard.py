"""The operator's dashboard at ``/ui/``: static page, its session login, data, live stream, actions.

- ``/ui/`` serves the page and its vendored assets (``engine/api/static``; no CDN).
- ``/ui/api/login`` spends a one-time login token (or the API token) for an HttpOnly,
  SameSite=Strict session cookie and answers the session's CSRF token.
- ``/ui/api/*`` reads need the cookie; actions also need ``X-CSRF-Token`` and, when the
  browser sends one, an ``Origin`` equal to the page's own.
- ``/ui/api/events`` is a server-sent event stream fed from the engine's PUB socket
  (``engine.observer.EventFeed``): nothing polls.
- ``/ui/api/reports`` lists the backtest and optimisation reports of the reports directory
  (``engine.api.reports``) and ``/ui/reports/<id>/<file>`` serves one of a report's listed
  files, sandboxed, to a logged-in browser.

Each data request and action is one or a few bus requests through the API's
``EngineBridge``, the same as the REST endpoints.
"""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from engine.api.bridge import EngineBridge
from engine.api.operator import ID_PATTERN, ScopeIn, balance_history, run_action
from engine.api.reports import ReportIndex
from engine.api.sessions import SESSION_TTL_S, LoginManager
from engine.observer import FEED_GAP, EventFeed
from maotrade.errors import MAOTradeError
from maotrade.messages import ClientToEngine, EngineToClient, message

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "maotrade_session"
CSRF_HEADER = "X-CSRF-Token"
STREAM_QUEUE = 2000  # events waiting for one browser before it is told to reload its snapshot
PULSE_S = 2.0  # how often the stream carries fresh account views (marks, P&L today, liveness)
# Scripts only from the engine itself; inline styles are allowed because the chart library sets them.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# A report is shown in a frame of the page but runs sandboxed: an opaque origin with no cookie,
# no access to the page or the API; its scripts (plotly, embedded) may run, nothing is fetched.
REPORT_PAGE_CSP = ("sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
                   "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; frame-ancestors 'self'")
REPORT_FILE_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'"
REPORT_ID_PATTERN = r"^[0-9a-f]{16}$"


class LoginIn(BaseModel):
    """A one-time login token (from the console's login URL) or the API token."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=256)


class KillIn(BaseModel):
    """Kill switch mode of one account, or the global one."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["active", "reduce_only", "halted"]
    account: Optional[str] = Field(None, min_length=1, max_length=64, pattern=ID_PATTERN)


def _totals(accounts: list[dict]) -> dict:
    """Sums of money per currency (accounts in different currencies are never added up).

    Balance, equity and available are the brokers' last reports; open and daily P&L are the
    engine's, at its latest prices.
    """
    out: dict[str, dict] = {}
    for view in accounts:
        info = view.get("account_info") or {}
        if not info:
            continue
        cur = out.setdefault(info.get("currency") or "", {"balance": 0.0, "equity": 0.0, "available": 0.0,
                                                          "unrealized_pnl": 0.0, "daily_pnl": 0.0, "accounts": 0})
        for name in ("balance", "equity", "available"):
            cur[name] += float(info.get(name) or 0.0)
        # Open P&L at the engine's latest prices (the broker's figure is only as fresh as its last report).
        cur["unrealized_pnl"] += sum(float(p.get("unrealized_pnl") or 0.0) for p in view["portfolio"]["positions"])
        cur["daily_pnl"] += float(view.get("daily_pnl") or 0.0)
        cur["accounts"] += 1
    return out


class BrowserStream:
    """One browser's share of the event feed: a bounded queue on the server's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=STREAM_QUEUE)
        self.overflowed = False

    def offer(self, event: Optional[dict]) -> None:
        """Called on the feed thread: hand the event over to the loop, never waiting."""
        try:
            self.loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:  # the server's loop has closed: the stream is over anyway
            pass

    def _put(self, event: Optional[dict]) -> None:
        if event is None:  # the end: make room for it whatever is queued
            while self.queue.full():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too slow to keep up: tell it to reload its snapshot instead of growing without bound.
            self.overflowed = True
            self.queue.get_nowait()
            self.queue.put_nowait({"type": FEED_GAP, "missed": -1})


class OpenStreams:
    """The browsers' live streams, so that stopping the server can end them."""

    def __init__(self):
        self.streams: set[BrowserStream] = set()

    def close(self) -> None:
        """End every stream (each browser will reconnect to whatever serves next)."""
        for stream in list(self.streams):
            stream.offer(None)


def report_headers(name: str) -> dict:
    """Headers of a served report file: framable by the page only, sandboxed, never cached."""
    policy = REPORT_PAGE_CSP if name.endswith(".html") else REPORT_FILE_CSP
    return {"Content-Security-Policy": policy, "X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def mount_dashboard(app: FastAPI, bridge: EngineBridge, logins: LoginManager,
                    feed: Optional[EventFeed], reports: Optional[ReportIndex] = None) -> OpenStreams:
    """Add the dashboard's routes to ``app``; return the handle that ends its live streams.

    ``reports`` is the reports directory's index (none: the reports view lists nothing)."""
    router = APIRouter(prefix="/ui")
    open_streams = OpenStreams()

    def session_of(request: Request):
        found = logins.session(request.cookies.get(COOKIE))
        if found is None:
            raise HTTPException(status_code=401, detail="not logged in (open the login URL the engine printed)")
        return found

    def action_allowed(request: Request) -> None:
        session_of(request)
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}":
            raise HTTPException(status_code=403, detail=f"cross-origin action refused (Origin {origin})")
        if not logins.check_csrf(request.cookies.get(COOKIE), request.headers.get(CSRF_HEADER)):
            raise HTTPException(status_code=403, detail=f"missing or wrong {CSRF_HEADER}")

    read = [Depends(session_of)]
    act = [Depends(action_allowed)]

    @app.get("/ui", include_in_schema=False)
    def ui_redirect():
        return RedirectResponse("/ui/")

    @router.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", headers=SECURITY_HEADERS)

    @router.post("/api/login", include_in_schema=False)
    def login(body: LoginIn, request: Request):
        granted = logins.login(body.token)
        if granted is None:
            raise HTTPException(status_code=401, detail="login token unknown, already used or expired")
        session_id, csrf = granted
        response = JSONResponse({"csrf": csrf}, headers={"Cache-Control": "no-store"})
        response.set_cookie(COOKIE, session_id, max_age=int(SESSION_TTL_S), path="/ui", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @router.get("/api/session", include_in_schema=False)
    def session(request: Request):
        # Same-origin only (no CORS headers are ever sent), so a foreign page cannot read it.
        return JSONResponse({"csrf": session_of(request).csrf}, headers={"Cache-Control": "no-store"})

    @router.post("/api/logout", include_in_schema=False, dependencies=act)
    def logout(request: Request):
        logins.logout(request.cookies.get(COOKIE))
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE, path="/ui")
        return response

    @router.get("/api/overview", dependencies=read, include_in_schema=False)
    def overview() -> dict:
        views = account_views()
        risk = bridge.call(ClientToEngine.RISK_STATUS, EngineToClient.RISK)["risk"]
        return {"accounts": views, "totals": _totals(views), "risk": risk,
                "events": feed.recent() if feed is not None else []}

    @router.get("/api/accounts/{account}/history", dependencies=read, include_in_schema=False)
    def history(account: str) -> dict:
        return balance_history(bridge, account)

    def account_views() -> list[dict]:
        views = []
        for entry in bridge.call(ClientToEngine.HELLO, "welcome", name=bridge.name)["accounts"]:
            view = bridge.call(ClientToEngine.ACCOUNT_REQUEST, EngineToClient.ACCOUNT, match=lambda m, a=entry["account"]: m.get("account") == a,
                               account=entry["account"])
            view.pop("type", None)
            view.pop("v", None)
            views.append(view)
        return views

    def pulse() -> dict:
        # Marks, daily P&L and worker liveness move without an event: the stream carries them.
        try:
            views = account_views()
        except MAOTradeError as exc:
            return {"type": "pulse", "error": str(exc), "accounts": []}
        return {"type": "pulse", "accounts": views, "totals": _totals(views)}

    @router.get("/api/events", dependencies=read, include_in_schema=False)
    async def events(request: Request):
        if feed is None:
            raise HTTPException(status_code=503, detail="no event feed")
        stream = BrowserStream(asyncio.get_running_loop())
        feed.add_listener(stream.offer)
        open_streams.streams.add(stream)

        async def lines():
            try:
                yield "retry: 2000\n\n"
                loop = asyncio.get_running_loop()
                next_pulse = loop.time() + PULSE_S
                while True:
                    try:
                        event = await asyncio.wait_for(stream.queue.get(), max(0.0, next_pulse - loop.time()))
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        next_pulse = loop.time() + PULSE_S
                        event = await asyncio.to_thread(pulse)
                    if event is None:  # the server is stopping
                        return
                    yield f"data: {json.dumps(event, default=str)}\n\n"
                    if stream.overflowed:
                        return  # the browser reconnects and reloads its snapshot
            finally:
                feed.remove_listener(stream.offer)
                open_streams.streams.discard(stream)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(lines(), media_type="text/event-stream", headers=headers)

    @router.get("/api/reports", dependencies=read, include_in_schema=False)
    def report_list() -> dict:
        if reports is None:
            return {"root": None, "reports": []}
        return {"root": str(reports.root), "reports": reports.listing()}

    @router.get("/reports/{report}/{name:path}", dependencies=read, include_in_schema=False)
    def report_file(report: str, name: str):
        # The id and the name are only looked up among what the index lists, never joined to a path.
        path = reports.file(report, name) if reports is not None and re.match(REPORT_ID_PATTERN, report) else None
        if path is None:
            raise HTTPException(status_code=404, detail=f"no report file {name!r} in report {report!r}")
        return FileResponse(path, headers=report_headers(name))

    @router.post("/api/kill-switch", dependencies=act, include_in_schema=False)
    def kill_switch(body: KillIn) -> dict:
        fields = {"mode": body.mode}
        if body.account:
            fields["account"] = body.account
        return bridge.call(ClientToEngine.KILL_SWITCH, EngineToClient.RISK, **fields)["risk"]["kill_switch"]

    @router.post("/api/cancel-all", dependencies=act, include_in_schema=False)
    def cancel_all(body: ScopeIn) -> dict:
        return run_action(bridge, ClientToEngine.CANCEL_ALL, body.account)

    @router.post("/api/flatten", dependencies=act, include_in_schema=False)
    def flatten(body: ScopeIn) -> dict:
        return run_action(bridge, ClientToEngine.FLATTEN, body.account)

    @router.post("/api/orders/{account}/{client_order_id}/cancel", dependencies=act, include_in_schema=False)
    def cancel_order(account: str, client_order_id: str) -> dict:
        cancel = message(ClientToEngine.ORDER_CANCEL, account=account, client_order_id=client_order_id)
        orders = bridge.call(ClientToEngine.ORDERS_REQUEST, EngineToClient.ORDERS, before=(cancel,), account=account,
                             client_order_id=client_order_id)["orders"]
        if not orders:
            raise HTTPException(status_code=404, detail=f"unknown order {client_order_id} on account {account}")
        return orders[0]

    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    return open_streams
