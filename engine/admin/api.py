"""The admin/config REST API (FastAPI). Reads need the admin or the read token; writes
need the admin token (checked by ``engine.http_guard.BearerGate`` before any body is read).
Every write is audited with who (token kind and client address), what and when.

Served document: ``GET /api/accounts/{id}/config``. The OpenAPI document is at
``/openapi.json``; docs/ADMIN_API.md lists every endpoint.
"""
from __future__ import annotations

from typing import Any, Dict

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from engine.admin.store import Conflict, NotFound, RegistryStore
from engine.http_guard import harden, token_matches
from maotrade.errors import ConfigError


class BrokerIn(BaseModel):
    """A broker registration."""

    model_config = ConfigDict(extra="forbid")
    brokerClass: str = Field(min_length=3, max_length=256)
    brokerConfig: Dict[str, Any] = Field(default_factory=dict)


class AccountIn(BaseModel):
    """An account registration; secret values are encrypted before they are stored."""

    model_config = ConfigDict(extra="forbid")
    brokerName: str = Field(min_length=1, max_length=128)
    accountConfig: Dict[str, Any] = Field(default_factory=dict)


class MappingIn(BaseModel):
    """One epic mapping."""

    model_config = ConfigDict(extra="forbid")
    epicBroker: str = Field(min_length=1, max_length=128)


def create_app(store: RegistryStore, token: str) -> FastAPI:
    """Build the admin app over ``store``; ``token`` guards every write."""
    app = harden(FastAPI(title="MAOTrade admin/config service", version="1", docs_url=None, redoc_url=None),
                 "MAOTrade admin")

    def require_token(authorization: str = Header(default="")) -> None:
        if not token_matches(authorization, token):
            raise HTTPException(status_code=401, detail="missing or wrong admin token (Authorization: Bearer ...)")

    def actor(request: Request) -> str:
        host = request.client.host if request.client else "?"
        return f"rest:{host} ({request.scope.get('state', {}).get('token_kind', 'admin')} token)"

    @app.exception_handler(NotFound)
    async def not_found(_, exc: NotFound):
        return JSONResponse(status_code=404, content={"detail": str(exc).strip("'\"")})

    @app.exception_handler(Conflict)
    async def conflict(_, exc: Conflict):
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(ConfigError)
    async def bad_config(_, exc: ConfigError):
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/api/health")
    def health() -> dict:
        """Liveness probe."""
        return {"status": "ok"}

    @app.get("/api/brokers")
    def list_brokers() -> list:
        """List registered brokers."""
        return store.list_brokers()

    @app.put("/api/brokers/{name}", dependencies=[Depends(require_token)])
    def put_broker(name: str, body: BrokerIn, request: Request) -> dict:
        """Register or replace a broker (its class must be allowed on this host and load)."""
        return store.put_broker(name, body.brokerClass, body.brokerConfig, actor(request))

    @app.delete("/api/brokers/{name}", dependencies=[Depends(require_token)])
    def delete_broker(name: str, request: Request) -> dict:
        """Remove a broker no account uses."""
        store.remove_broker(name, actor(request))
        return {"removed": name}

    @app.get("/api/accounts")
    def list_accounts() -> list:
        """List accounts (secrets redacted)."""
        return store.list_accounts()

    @app.put("/api/accounts/{account_id}", dependencies=[Depends(require_token)])
    def put_account(account_id: str, body: AccountIn, request: Request) -> dict:
        """Register or replace an account (unknown keys refused; secrets encrypted)."""
        return store.put_account(account_id, body.brokerName, body.accountConfig, actor(request))

    @app.delete("/api/accounts/{account_id}", dependencies=[Depends(require_token)])
    def delete_account(account_id: str, request: Request) -> dict:
        """Remove an account and its mappings."""
        store.remove_account(account_id, actor(request))
        return {"removed": account_id}

    @app.get("/api/accounts/{account_id}/config")
    def account_config(account_id: str) -> dict:
        """The MAOTrade account document (secrets stay encrypted)."""
        return store.document(account_id)

    @app.get("/api/accounts/{account_id}/mappings")
    def list_mappings(account_id: str) -> dict:
        """An account's epic mapping."""
        return store.mappings(account_id)

    @app.put("/api/accounts/{account_id}/mappings/{epic}", dependencies=[Depends(require_token)])
    def put_mapping(account_id: str, epic: str, body: MappingIn, request: Request) -> dict:
        """Map a MAOTrade epic to the broker's code."""
        store.set_mapping(account_id, epic, body.epicBroker, actor(request))
        return {"epic": epic, "epicBroker": body.epicBroker}

    @app.delete("/api/accounts/{account_id}/mappings/{epic}", dependencies=[Depends(require_token)])
    def delete_mapping(account_id: str, epic: str, request: Request) -> dict:
        """Remove one mapping."""
        store.remove_mapping(account_id, epic, actor(request))
        return {"removed": epic}

    @app.get("/api/audit", dependencies=[Depends(require_token)])
    def audit(limit: int = Query(100, ge=1, le=10_000), target: str = Query("", max_length=256)) -> list:
        """The latest registry writes, newest first (admin token only)."""
        return store.audit_log(limit, target or None)

    return app
