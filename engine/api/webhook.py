"""TradingView (and other) alert webhooks: authenticate, deduplicate, then trade later.

An alert is accepted only if, in this order: its account has a webhook secret
(``accountConfig["webhook_secret"]``); the sender's address is allowed (optional
``accountConfig["webhook_allowed_ips"]``: addresses or CIDR networks); it is signed,
either by ``signature`` in the body (HMAC-SHA256 of ``canonical_string``) or by an
``X-MAOTrade-Signature: sha256=<hex>`` header over the raw body; its ``timestamp`` is
within the window; and its ``alert_id`` was never seen for that account. The alert id
is written to ``webhook.sqlite`` before the answer, so a retried alert never becomes a
second order, across restarts too; the order itself is placed by a background thread
under a client order id derived from the alert id (the engine's own idempotency key).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.api.amounts import AlertPositive
from engine.api.bridge import EngineBridge, EngineRequestError
from engine.http_guard import reject_constants
from maotrade.errors import MAOTradeError
from maotrade.messages import ClientToEngine as FromClient, EngineToClient as ToClient

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-MAOTrade-Signature"
CANONICAL_FIELDS = ("account", "alert_id", "ticker", "action", "order_type", "quantity", "price", "timestamp")
DEFAULT_WINDOW_S = 300.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    account TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    received INTEGER NOT NULL,
    client_order_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (account, alert_id)
);
"""


class TradingViewAlert(BaseModel):
    """The alert JSON (put it in the TradingView alert's message box)."""

    model_config = ConfigDict(extra="ignore")

    account: str = Field(min_length=1, max_length=64, description="target account id")
    ticker: str = Field(min_length=1, max_length=64, description="instrument; an 'EXCHANGE:' prefix is dropped")
    action: Literal["buy", "sell", "close"]
    order_type: Literal["market", "limit", "stop"] = "market"
    quantity: Optional[AlertPositive] = Field(None,
                                      description="units; required for buy/sell, optional for close")
    price: Optional[AlertPositive] = Field(None, description="limit/stop price")
    strategy: str = Field("", max_length=128, description="name of the sending strategy (recorded)")
    alert_id: str = Field(min_length=1, max_length=128, description="idempotency key")
    timestamp: Union[float, str] = Field(description="epoch seconds or ms, or ISO 8601 ({{timenow}})")
    signature: Optional[str] = Field(None, max_length=256, description="hex HMAC-SHA256 of the canonical string")

    @field_validator("account", "ticker", "strategy", "alert_id", "timestamp", "signature")
    @classmethod
    def _no_control_characters(cls, value):
        # The canonical string separates fields by newlines: a field holding one could make
        # two different alerts sign alike.
        if isinstance(value, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("control characters are not allowed")
        return value

    @property
    def epic(self) -> str:
        """The MAOTrade instrument code."""
        return self.ticker.rpartition(":")[2]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def canonical_string(fields: dict) -> str:
    """The signed text: ``CANONICAL_FIELDS`` values joined by newlines.

    Absent values are empty; whole numbers are written without a decimal point (``10``),
    others in their shortest round-trip form (``1.0855``).
    """
    return "\n".join(_text(fields.get(name)) for name in CANONICAL_FIELDS)


def sign_alert(fields: dict, secret: str) -> str:
    """The ``signature`` for an alert body (hex HMAC-SHA256 with the account's secret)."""
    return hmac.new(secret.encode(), canonical_string(fields).encode(), hashlib.sha256).hexdigest()


def sign_body(raw: bytes, secret: str) -> str:
    """The ``X-MAOTrade-Signature`` header value for a raw body."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def parse_timestamp(value: Union[float, str]) -> float:
    """Epoch seconds from epoch seconds, epoch ms or an ISO 8601 string."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"timestamp {value!r} is neither a number nor ISO 8601") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            return parsed.timestamp()
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"timestamp {value!r} is not a finite number")
    return value / 1000.0 if value > 1e11 else value


def client_order_id_for(account: str, alert_id: str) -> str:
    """The engine client order id of an alert (same alert, same id, always)."""
    return "tv-" + hashlib.sha256(f"{account}\n{alert_id}".encode()).hexdigest()[:24]


class WebhookRefused(MAOTradeError):
    """An alert that must not trade; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class AlertStore:
    """Alert ids seen per account, with what became of each (SQLite, WAL)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def claim(self, account: str, alert_id: str, client_order_id: str, payload: dict) -> bool:
        """Record a new alert; False if this account has seen ``alert_id`` before."""
        with self._lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO alerts (account, alert_id, received, client_order_id, payload, status)"
                " VALUES (?, ?, ?, ?, ?, 'accepted')",
                (account, alert_id, int(time.time() * 1000), client_order_id, json.dumps(payload)))
            return cur.rowcount == 1

    def finish(self, account: str, alert_id: str, status: str, detail: str = "") -> None:
        """Record the outcome of an alert."""
        with self._lock:
            self.db.execute("UPDATE alerts SET status = ?, detail = ? WHERE account = ? AND alert_id = ?",
                            (status, detail, account, alert_id))

    def get(self, account: str, alert_id: str) -> Optional[dict]:
        """One alert's record."""
        with self._lock:
            row = self.db.execute("SELECT received, client_order_id, payload, status, detail FROM alerts"
                                  " WHERE account = ? AND alert_id = ?", (account, alert_id)).fetchone()
        if row is None:
            return None
        return {"account": account, "alert_id": alert_id, "received": row[0], "client_order_id": row[1],
                "alert": json.loads(row[2]), "status": row[3], "detail": row[4]}

    def pending(self) -> list[dict]:
        """Alerts accepted but not yet known to be placed (the engine stopped in between)."""
        with self._lock:
            rows = self.db.execute("SELECT account, alert_id, payload FROM alerts WHERE status = 'accepted'"
                                   " ORDER BY received").fetchall()
        return [{"account": a, "alert_id": i, "alert": json.loads(p)} for a, i, p in rows]

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self.db.close()


class AccountWebhook:
    """One account's webhook credentials."""

    def __init__(self, secret: str, allowed_ips: Optional[list] = None):
        self.secret = secret
        self.networks = [ipaddress.ip_network(str(item), strict=False) for item in (allowed_ips or [])]

    def allows(self, host: Optional[str]) -> bool:
        """True if ``host`` may send alerts (always, without an allowlist)."""
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class WebhookService:
    """Checks alerts, remembers them, and places their orders on a background thread."""

    def __init__(self, bridge: EngineBridge, store: AlertStore, accounts: dict[str, AccountWebhook],
                 window_s: float = DEFAULT_WINDOW_S):
        self.bridge = bridge
        self.store = store
        self.accounts = accounts
        self.window_s = window_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook")

    def resume(self) -> int:
        """Place the orders of alerts accepted before a stop; return how many."""
        pending = self.store.pending()
        for item in pending:
            self.executor.submit(self._execute, TradingViewAlert.model_validate(item["alert"]))
        return len(pending)

    def receive(self, raw: bytes, header_signature: Optional[str], client_host: Optional[str]) -> dict:
        """Check one alert and queue its order; raise ``WebhookRefused`` to refuse it."""
        try:
            body = json.loads(raw, parse_constant=reject_constants)
        except RecursionError:
            raise WebhookRefused(400, "body is nested too deep") from None
        except ValueError:
            raise WebhookRefused(400, "body is not JSON") from None
        if not isinstance(body, dict):
            raise WebhookRefused(400, "body must be a JSON object")
        try:
            alert = TradingViewAlert.model_validate(body)
        except ValueError as exc:
            err = exc.errors()[0] if hasattr(exc, "errors") else {}
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            raise WebhookRefused(422, f"alert field '{where}': {err.get('msg', 'invalid')}") from None
        hook = self.accounts.get(alert.account)
        # An unknown account gets the same answer as a bad signature: the answers must not
        # tell a stranger which accounts exist. The address is checked after the signature
        # for the same reason.
        if hook is None:
            log.warning("event=webhook_refused account=%s reason=not_enabled", alert.account)
            raise WebhookRefused(401, "bad or missing signature")
        if not self._signed(alert, body, raw, header_signature, hook.secret):
            log.warning("event=webhook_refused account=%s alert_id=%s reason=bad_signature", alert.account,
                        alert.alert_id)
            raise WebhookRefused(401, "bad or missing signature")
        if not hook.allows(client_host):
            log.warning("event=webhook_refused account=%s reason=ip_not_allowed host=%s", alert.account, client_host)
            raise WebhookRefused(403, f"address {client_host} may not send alerts for account {alert.account}")
        try:
            sent = parse_timestamp(alert.timestamp)
        except ValueError as exc:
            raise WebhookRefused(422, str(exc)) from None
        skew = time.time() - sent
        if abs(skew) > self.window_s:
            log.warning("event=webhook_refused account=%s alert_id=%s reason=stale skew_s=%.0f", alert.account,
                        alert.alert_id, skew)
            raise WebhookRefused(401, f"timestamp is {skew:+.0f}s from now, outside the {self.window_s:g}s window")
        if alert.action in ("buy", "sell") and alert.quantity is None:
            raise WebhookRefused(422, "alert field 'quantity': required for buy and sell")
        if alert.order_type != "market" and alert.price is None:
            raise WebhookRefused(422, f"alert field 'price': required for a {alert.order_type} order")
        client_order_id = client_order_id_for(alert.account, alert.alert_id)
        if not self.store.claim(alert.account, alert.alert_id, client_order_id,
                                alert.model_dump(exclude={"signature"})):
            log.info("event=webhook_replay account=%s alert_id=%s", alert.account, alert.alert_id)
            raise WebhookRefused(409, f"alert_id {alert.alert_id!r} was already received for account "
                                      f"{alert.account}; nothing placed")
        self.executor.submit(self._execute, alert)
        log.info("event=webhook_accepted account=%s alert_id=%s order=%s", alert.account, alert.alert_id,
                 client_order_id)
        return {"status": "accepted", "account": alert.account, "alert_id": alert.alert_id,
                "client_order_id": client_order_id}

    @staticmethod
    def _signed(alert: TradingViewAlert, body: dict, raw: bytes, header: Optional[str], secret: str) -> bool:
        if header:
            return hmac.compare_digest(header.strip().encode(), sign_body(raw, secret).encode())
        if not alert.signature:
            return False
        expected = sign_alert(body, secret)
        return hmac.compare_digest(alert.signature.strip().lower().encode(), expected.encode())

    def _execute(self, alert: TradingViewAlert) -> None:
        key = client_order_id_for(alert.account, alert.alert_id)
        fields = {"account": alert.account, "epic": alert.epic, "client_order_id": key, "source": "webhook"}
        try:
            if alert.action == "close":
                if alert.quantity is not None:
                    fields["qty"] = alert.quantity
                answer = self.bridge.call(FromClient.ORDER_CLOSE, ToClient.ORDER, match=lambda m: m.get("client_order_id") == key,
                                          **fields)
            else:
                qty = alert.quantity if alert.action == "buy" else -alert.quantity
                answer = self.bridge.call(FromClient.ORDER_OPEN, ToClient.ORDER, match=lambda m: m.get("client_order_id") == key,
                                          qty=qty, order_type=alert.order_type.upper(), price=alert.price,
                                          **fields)
        except EngineRequestError as exc:
            self.store.finish(alert.account, alert.alert_id, "refused", str(exc))
            log.warning("event=webhook_order_refused account=%s alert_id=%s reason=%s", alert.account,
                        alert.alert_id, exc)
            return
        except MAOTradeError as exc:  # engine unreachable: stays 'accepted', resumed at next start
            log.error("event=webhook_order_failed account=%s alert_id=%s reason=%s", alert.account,
                      alert.alert_id, exc)
            return
        status = "rejected" if answer.get("status") == "REJECTED" else "placed"
        self.store.finish(alert.account, alert.alert_id, status, answer.get("reason") or "")

    def close(self) -> None:
        """Finish queued alerts, then close the store."""
        self.executor.shutdown(wait=True)
        self.store.close()
