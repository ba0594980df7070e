"""The engine's REST API (FastAPI): orders, accounts, positions, balances, risk, kill switch.

Every endpoint but ``/api/health`` and the webhook needs ``Authorization: Bearer <token>``
(``MAOTRADE_API_TOKEN`` or ``api.token`` in the data directory). The app holds no state
of its own: each request becomes a bus request to the engine (``EngineBridge``). The
OpenAPI document is at ``/openapi.json``; docs/ENGINE_API.md lists every endpoint.
"""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from engine.api.amounts import StrictAmount, StrictPositive
from engine.api.bridge import EngineBridge, EngineRequestError
from engine.api.operator import operator_router
from engine.api.webhook import SIGNATURE_HEADER, TradingViewAlert, WebhookRefused, WebhookService
from engine.http_guard import harden, token_matches
from engine.risk import RiskLimits
from maotrade.errors import TemporaryError
from maotrade.messages import ClientToEngine as FromClient, EngineToClient as ToClient, message
from maotrade.order import OrderStatus

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"


class OrderIn(BaseModel):
    """A new order (``qty`` signed: positive buys, negative sells)."""

    model_config = ConfigDict(extra="forbid")
    account: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    epic: str = Field(min_length=1, max_length=64)
    qty: Optional[StrictAmount] = Field(None, description="signed; for action close: the "
                                                          "unsigned amount, absent = all")
    order_type: Literal["MARKET", "LIMIT", "STOP"] = "MARKET"
    action: Literal["open", "close"] = "open"
    price: Optional[StrictPositive] = None
    stop_loss: Optional[StrictPositive] = None
    take_profit: Optional[StrictPositive] = None
    time_in_force: Literal["GTC", "DAY", "IOC", "FOK"] = "GTC"
    client_order_id: Optional[str] = Field(None, min_length=1, max_length=64, pattern=ID_PATTERN,
                                           description="idempotency key; made by the engine if absent")
    source: Literal["api", "manual"] = "api"


class KillSwitchIn(BaseModel):
    """Set the kill switch of one account, or of every account when ``account`` is absent."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["active", "reduce_only", "halted"]
    account: Optional[str] = Field(None, min_length=1, max_length=64, pattern=ID_PATTERN)


class RiskOverrideIn(BaseModel):
    """Override limits at run time (of one account, or the global ones); ``reset`` drops earlier ones."""

    model_config = ConfigDict(extra="forbid")
    account: Optional[str] = Field(None, min_length=1, max_length=64, pattern=ID_PATTERN)
    limits: Optional[RiskLimits] = None
    reset: bool = False


class OrderOut(BaseModel):
    """An order as the engine journals it."""

    model_config = ConfigDict(extra="allow")
    client_order_id: str
    account: str
    epic: str
    qty: float
    status: str
    source: str


class OrderResult(BaseModel):
    """Answer to a new order: the order, and the engine's refusal code if it was refused."""

    order: OrderOut
    code: Optional[str] = None
    error: Optional[str] = None
    duplicate: bool = False


def create_app(bridge: EngineBridge, token: str, webhook: Optional[WebhookService] = None) -> FastAPI:
    """Build the API over a bus ``bridge``; ``token`` guards every endpoint but health and webhooks."""
    app = harden(FastAPI(title="MAOTrade engine API", version="1", docs_url=None, redoc_url=None,
                         description="Control of a running MAOTrade engine. Bearer token auth."),
                 "MAOTrade engine API")

    def require_token(authorization: str = Header(default="", description="Bearer <api token>")) -> None:
        if not token_matches(authorization, token):
            raise HTTPException(status_code=401, detail="missing or wrong API token (Authorization: Bearer ...)")

    @app.exception_handler(EngineRequestError)
    async def engine_refused(_, exc: EngineRequestError):
        return JSONResponse(status_code=404 if exc.not_found else 409, content={"detail": str(exc)})

    @app.exception_handler(TemporaryError)
    async def engine_silent(_, exc: TemporaryError):
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    auth = [Depends(require_token)]
    app.include_router(operator_router(bridge, auth))

    def accounts() -> list[str]:
        return [a["account"] for a in bridge.call(FromClient.HELLO, ToClient.WELCOME, name=bridge.name)["accounts"]]

    def account_view(account: str) -> dict:
        answer = bridge.call(FromClient.ACCOUNT_REQUEST, ToClient.ACCOUNT, match=lambda m: m.get("account") == account,
                             account=account)
        answer.pop("type", None)
        answer.pop("v", None)
        return answer

    @app.get("/api/health")
    def health() -> dict:
        """Liveness of the API (not of the engine: see /api/status)."""
        return {"status": "ok"}

    @app.get("/api/status", dependencies=auth)
    def status() -> dict:
        """Engine and account status, with risk counters and kill switch modes."""
        answer = bridge.call(FromClient.STATUS_REQUEST, ToClient.STATUS)["status"]
        answer["risk"] = bridge.call(FromClient.RISK_STATUS, ToClient.RISK)["risk"]
        return answer

    @app.get("/api/orders", dependencies=auth, response_model=List[OrderOut])
    def list_orders(account: Optional[str] = Query(None, max_length=64),
                    epic: Optional[str] = Query(None, max_length=64),
                    status: Optional[Literal[tuple(sorted(OrderStatus.ALL))]] = None,  # type: ignore[valid-type]
                    source: Optional[Literal["strategy", "api", "webhook", "manual", "operator", "bracket", "external"]] = None,
                    since: Optional[int] = Query(None, ge=0, le=2**53, description="created at or after (epoch ms)"),
                    until: Optional[int] = Query(None, ge=0, le=2**53, description="created before (epoch ms)"),
                    limit: int = Query(500, ge=1, le=5000)) -> list:
        """Orders matching every filter, newest first."""
        filters = {k: v for k, v in dict(account=account, epic=epic, status=status, source=source,
                                         since=since, until=until).items() if v is not None}
        return bridge.call(FromClient.ORDERS_REQUEST, ToClient.ORDERS, limit=limit, **filters)["orders"]

    @app.post("/api/orders", dependencies=auth, response_model=OrderResult, status_code=201,
              responses={409: {"description": "refused by the engine"},
                         422: {"description": "invalid, or rejected by a risk or order check"}})
    def create_order(body: OrderIn):
        """Place an order; answers with the order as journaled (or REJECTED, with its code)."""
        from maotrade.order import new_client_order_id

        fields = body.model_dump(exclude_none=True)
        key = fields["client_order_id"] = body.client_order_id or new_client_order_id("api")
        kind = FromClient.ORDER_CLOSE if body.action == "close" else FromClient.ORDER_OPEN
        if kind == FromClient.ORDER_CLOSE:
            for name in ("order_type", "price", "stop_loss", "take_profit", "action"):
                fields.pop(name, None)
            if "qty" in fields:
                fields["qty"] = abs(fields["qty"])
        elif body.qty is None:
            raise HTTPException(status_code=422, detail="qty is required to open an order")
        answer = bridge.call(kind, ToClient.ORDER, match=lambda m: m.get("client_order_id") == key, **fields)
        order = {k: v for k, v in answer.items() if k not in ("type", "v", "error", "code", "duplicate", "request")}
        result = {"order": order, "code": answer.get("code"), "error": answer.get("error"),
                  "duplicate": bool(answer.get("duplicate"))}
        if answer.get("status") == OrderStatus.REJECTED and not answer.get("duplicate"):
            return JSONResponse(status_code=422, content=result)
        return JSONResponse(status_code=200 if result["duplicate"] else 201, content=result)

    def one_order(account: str, client_order_id: str) -> dict:
        orders = bridge.call(FromClient.ORDERS_REQUEST, ToClient.ORDERS, account=account, client_order_id=client_order_id)["orders"]
        if not orders:
            raise HTTPException(status_code=404, detail=f"unknown order {client_order_id} on account {account}")
        return orders[0]

    @app.get("/api/orders/{account}/{client_order_id}", dependencies=auth, response_model=OrderOut)
    def get_order(account: str, client_order_id: str) -> dict:
        """One order with its fills."""
        return one_order(account, client_order_id)

    @app.delete("/api/orders/{account}/{client_order_id}", dependencies=auth, status_code=202,
                response_model=OrderOut)
    def cancel_order(account: str, client_order_id: str) -> dict:
        """Ask the broker to cancel a working order; poll the order for the outcome."""
        cancel = message(FromClient.ORDER_CANCEL, account=account, client_order_id=client_order_id)
        orders = bridge.call(FromClient.ORDERS_REQUEST, ToClient.ORDERS, before=(cancel,), account=account,
                             client_order_id=client_order_id)["orders"]
        if not orders:
            raise HTTPException(status_code=404, detail=f"unknown order {client_order_id} on account {account}")
        return orders[0]

    @app.post("/api/orders/{account}/{client_order_id}/refresh", dependencies=auth, status_code=202,
              response_model=OrderOut)
    def refresh_order(account: str, client_order_id: str) -> dict:
        """Ask the broker for the order's state; the answer updates the journal."""
        return bridge.call(FromClient.ORDER_REFRESH, ToClient.ORDERS, account=account, client_order_id=client_order_id)["orders"][0]

    @app.get("/api/accounts", dependencies=auth)
    def list_accounts() -> list:
        """Every account: state, account info, positions, working orders, kill switch."""
        return [account_view(a) for a in accounts()]

    @app.get("/api/accounts/{account}", dependencies=auth)
    def get_account(account: str) -> dict:
        """One account."""
        return account_view(account)

    @app.get("/api/positions", dependencies=auth)
    def positions(account: Optional[str] = Query(None, max_length=64)) -> dict:
        """Positions per account, and summed per instrument across the accounts shown."""
        chosen = [account] if account else accounts()
        by_account, total = {}, {}
        for acc in chosen:
            rows = account_view(acc)["portfolio"]["positions"]
            by_account[acc] = rows
            for row in rows:
                agg = total.setdefault(row["epic"], {"epic": row["epic"], "qty": 0.0, "realized_pnl": 0.0,
                                                     "unrealized_pnl": 0.0, "accounts": 0})
                agg["qty"] += row["qty"]
                agg["realized_pnl"] += row["realized_pnl"]
                agg["unrealized_pnl"] += row.get("unrealized_pnl") or 0.0
                agg["accounts"] += 1 if row["qty"] else 0
        return {"accounts": by_account, "aggregated": sorted(total.values(), key=lambda r: r["epic"])}

    @app.get("/api/balances", dependencies=auth)
    def balances(account: Optional[str] = Query(None, max_length=64)) -> dict:
        """Balance, equity and available funds per account, and totals per currency."""
        chosen = [account] if account else accounts()
        by_account, totals = {}, {}
        for acc in chosen:
            info = account_view(acc)["account_info"] or {}
            by_account[acc] = info
            if info:
                cur = totals.setdefault(info.get("currency", ""), {"balance": 0.0, "equity": 0.0, "available": 0.0})
                for name in cur:
                    cur[name] += float(info.get(name) or 0.0)
        return {"accounts": by_account, "totals": totals}

    @app.get("/api/risk", dependencies=auth)
    def risk() -> dict:
        """Effective limits, kill switch modes, today's P&L and refusal counts by reason."""
        return bridge.call(FromClient.RISK_STATUS, ToClient.RISK)["risk"]

    @app.put("/api/risk/limits", dependencies=auth)
    def set_limits(body: RiskOverrideIn) -> dict:
        """Override limits at run time (persisted until reset)."""
        if body.limits is None and not body.reset:
            raise HTTPException(status_code=422, detail="give 'limits', 'reset': true, or both")
        fields: Dict[str, Any] = {"reset": body.reset}
        if body.account:
            fields["account"] = body.account
        if body.limits is not None:
            fields["limits"] = body.limits.model_dump(exclude_unset=True)
        return bridge.call(FromClient.RISK_SET, ToClient.RISK, **fields)["risk"]

    @app.post("/api/kill-switch", dependencies=auth)
    def kill_switch(body: KillSwitchIn) -> dict:
        """Set the kill switch: active, reduce_only (only reducing orders pass) or halted (none)."""
        fields = {"mode": body.mode}
        if body.account:
            fields["account"] = body.account
        return bridge.call(FromClient.KILL_SWITCH, ToClient.RISK, **fields)["risk"]["kill_switch"]

    if webhook is not None:
        alert_body = {"requestBody": {"required": True, "content": {
            "application/json": {"schema": TradingViewAlert.model_json_schema()}}}}

        @app.post("/api/webhook/tradingview", status_code=202, openapi_extra=alert_body,
                  responses={401: {"description": "bad signature or stale timestamp"},
                             403: {"description": "account not enabled or address not allowed"},
                             409: {"description": "alert_id already received"}})
        async def tradingview(request: Request) -> dict:
            """A TradingView alert (see docs/ENGINE_API.md); answered at once, traded asynchronously."""
            raw = await request.body()
            try:
                return webhook.receive(raw, request.headers.get(SIGNATURE_HEADER),
                                       request.client.host if request.client else None)
            except WebhookRefused as exc:
                return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

        @app.get("/api/webhook/alerts/{account}/{alert_id}", dependencies=auth)
        def alert(account: str, alert_id: str) -> dict:
            """What became of one alert: accepted, placed, rejected or refused."""
            record = webhook.store.get(account, alert_id)
            if record is None:
                raise HTTPException(status_code=404, detail=f"no alert {alert_id!r} for account {account}")
            return record

    return app
