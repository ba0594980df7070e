"""REST endpoints of the operator's actions: cancel-all, flatten, and the balance history.

Each is one bus request to the engine (``cancel_all``, ``flatten``,
``balance_history_request``; docs/PROTOCOL.md). The dashboard calls the same functions
behind its session cookie; scripts call these endpoints with the bearer token.
"""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from engine.api.bridge import EngineBridge
from maotrade.messages import ClientToEngine, EngineToClient

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
ACTIONS = {"cancel-all": ClientToEngine.CANCEL_ALL, "flatten": ClientToEngine.FLATTEN}


class ScopeIn(BaseModel):
    """One account, or every account when ``account`` is absent."""

    model_config = ConfigDict(extra="forbid")
    account: Optional[str] = Field(None, min_length=1, max_length=64, pattern=ID_PATTERN)


def run_action(bridge: EngineBridge, action: str, account: Optional[str]) -> dict:
    """Ask the engine for ``action`` (``cancel_all`` or ``flatten``); return what it did."""
    fields = {"account": account} if account else {}
    answer = bridge.call(action, EngineToClient.OPERATOR_ACTION,
                         match=lambda m: m.get("action") == action and m.get("account") == account, **fields)
    return {k: v for k, v in answer.items() if k not in ("type", "v", "seq")}


def balance_history(bridge: EngineBridge, account: str, since: int = 0) -> dict:
    """Balance and equity snapshots of ``account`` from ``since`` (epoch ms), and its recent fills."""
    answer = bridge.call(ClientToEngine.BALANCE_HISTORY_REQUEST, EngineToClient.BALANCE_HISTORY,
                         match=lambda m: m.get("account") == account, account=account, since=since)
    return {"account": account, "points": answer["points"], "fills": answer["fills"]}


def operator_router(bridge: EngineBridge, auth: list) -> APIRouter:
    """The endpoints, guarded by the API's ``auth`` dependencies."""
    router = APIRouter(dependencies=auth)

    @router.post("/api/cancel-all")
    def cancel_all(body: ScopeIn) -> dict:
        """Cancel every working order of one account (or of all); answers which cancels were sent."""
        return run_action(bridge, ClientToEngine.CANCEL_ALL, body.account)

    @router.post("/api/flatten")
    def flatten(body: ScopeIn) -> dict:
        """Cancel working orders and close every position at market; the kill switch is left reduce_only."""
        return run_action(bridge, ClientToEngine.FLATTEN, body.account)

    @router.get("/api/accounts/{account}/balance-history")
    def history(account: str, since: int = Query(0, ge=0, le=2**53, description="epoch ms")) -> dict:
        """Balance and equity over time (from the journal), thinned to 2000 points; the last 100 fills."""
        return balance_history(bridge, account, since)

    return router
