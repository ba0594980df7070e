"""Pure translation between IG's wire format and MAOTrade's (no I/O, no clock).

Status and error tables are module-level data so they can be read, tested and
extended in one place.
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any, Optional
from urllib.parse import quote, urlencode

from maotrade.bars import make_bar
from maotrade.errors import ProtocolError

# Time frames as in the MAOTrade specification: history (minutes -> IG resolution)
# and streaming (seconds -> IG chart scale).
HISTORY_FRAMES = {1: "MINUTE", 5: "MINUTE_5", 60: "HOUR", -1: "DAY"}
DATA_FRAMES = {300: "5MINUTE", 60: "1MINUTE", 1: "SECOND"}
# Every CHART scale the stream offers; HOUR is accepted though not advertised.
CHART_SCALES = {1: "SECOND", 60: "1MINUTE", 300: "5MINUTE", 3600: "HOUR"}

MARKET_FIELDS = ["BID", "OFFER", "HIGH", "LOW", "UPDATE_TIME", "MARKET_STATE"]
CHART_FIELDS = ["UTM", "BID_OPEN", "BID_HIGH", "BID_LOW", "BID_CLOSE", "OFR_OPEN", "OFR_HIGH",
                "OFR_LOW", "OFR_CLOSE", "LTV", "CONS_END"]
TRADE_FIELDS = ["CONFIRMS", "OPU", "WOU"]

# IG errorCodes that mean "log in again" rather than "give up".
TOKEN_ERRORS = frozenset({
    "error.security.client-token-invalid", "error.security.client-token-missing",
    "error.security.account-token-invalid", "error.security.account-token-missing",
    "error.security.oauth-token-invalid", "error.security.invalid-session",
})
# errorCodes that mean the credentials or key are wrong: a person must act.
AUTH_ERRORS = frozenset({
    "error.security.invalid-details", "error.security.api-key-invalid",
    "error.security.api-key-missing", "error.security.api-key-disabled",
    "error.security.api-key-restricted", "error.security.account-suspended",
    "error.security.account-access-denied", "error.security.client-suspended",
    "error.public-api.failure.kyc.required", "error.security.generic",
})
# errorCodes of IG's request allowances: slow down, do not resend blindly.
ALLOWANCE_ERRORS = frozenset({
    "error.public-api.exceeded-api-key-allowance", "error.public-api.exceeded-account-allowance",
    "error.public-api.exceeded-account-trading-allowance",
    "error.public-api.exceeded-account-historical-data-allowance",
})

# IG confirm reason codes, in the words a trader reads in the engine's log.
REJECT_REASONS = {
    "INSUFFICIENT_FUNDS": "insufficient funds",
    "MARKET_CLOSED": "market closed",
    "MARKET_CLOSED_WITH_EDITS": "market closed",
    "MARKET_OFFLINE": "market offline",
    "MARKET_UNAVAILABLE_TO_CLIENT": "market unavailable to this account",
    "INSTRUMENT_NOT_FOUND": "instrument not found",
    "MINIMUM_ORDER_SIZE_ERROR": "size below the market minimum",
    "MAX_AUTO_SIZE_EXCEEDED": "size above the automatic maximum",
    "ATTACHED_ORDER_LEVEL_ERROR": "stop or limit level is invalid",
    "WRONG_SIDE_OF_MARKET": "level on the wrong side of the market",
    "POSITION_NOT_FOUND": "position not found",
    "POSITION_NOT_AVAILABLE_TO_CLOSE": "position not available to close",
    "DUPLICATE_ORDER_ERROR": "duplicate order",
    "ORDER_DECLINED": "order declined",
    "STOP_REQUIRED_ERROR": "a stop is required on this market",
    "ACCOUNT_NOT_ENABLED_TO_TRADING": "account not enabled for trading",
    "UNKNOWN": "unknown reason",
    "GENERAL_ERROR": "general error",
}

# What an ACCEPTED confirm does to the MAOTrade order, by the request that made the deal,
# and the confirm ``status`` values IG sends for it. A REJECTED confirm makes a new
# order (open or close) REJECTED, and refuses an amend or cancel request (the order
# keeps its state).
ACCEPTED_EFFECT = {
    "open_market": ("FILLED", frozenset({"OPEN", "PARTIALLY_CLOSED", "FULLY_CLOSED"})),  # netting closes
    "open_working": ("ACCEPTED", frozenset({"OPEN"})),
    "close": ("FILLED", frozenset({"PARTIALLY_CLOSED", "FULLY_CLOSED"})),
    "amend": ("unchanged", frozenset({"AMENDED"})),
    "cancel": ("CANCELLED", frozenset({"DELETED"})),
}

_DEAL_REFERENCE = re.compile(r"^[A-Za-z0-9_\-]{1,30}$")


def deal_reference(client_order_id: str) -> str:
    """Return the IG dealReference of a client order id: the same id every time.

    IG allows ``[A-Za-z0-9_-]{1,30}``; an id that does not fit is replaced by a short
    prefix and a hash, so a timed-out deal can always be looked up again by it.
    """
    if _DEAL_REFERENCE.match(client_order_id):
        return client_order_id
    clean = re.sub(r"[^A-Za-z0-9_\-]", "_", client_order_id)[:13]
    digest = hashlib.sha256(client_order_id.encode()).hexdigest()[:16]
    return f"{clean}-{digest}"


def direction(qty: float) -> str:
    """IG direction of a signed quantity."""
    return "BUY" if qty > 0 else "SELL"


def signed(size: Any, direction_: str) -> float:
    """Signed MAOTrade quantity of an IG size and direction."""
    return float(size) * (1 if direction_ == "BUY" else -1)


def reject_reason(confirm: dict) -> str:
    """One-line reason of a rejected deal, keeping IG's own code."""
    code = confirm.get("reason") or "UNKNOWN"
    text = REJECT_REASONS.get(code, code.lower().replace("_", " "))
    return f"IG rejected deal {confirm.get('dealReference', '')}: {code} ({text})"


def error_code(body: Any) -> str:
    """The ``errorCode`` of an IG error body, or ''."""
    if isinstance(body, dict):
        return str(body.get("errorCode") or "")
    return ""


def parse_json_field(raw: Optional[str], name: str) -> Optional[dict]:
    """Decode a JSON field of the TRADE stream; ``ProtocolError`` naming it if it is garbage."""
    if raw in (None, ""):
        return None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"IG {name} update is not JSON: {str(raw)[:80]!r}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"IG {name} update is not an object: {str(raw)[:80]!r}")
    return value


def confirm_outcome(confirm: dict) -> str:
    """Classify a confirm: ``ACCEPTED`` or ``REJECTED`` (``ProtocolError`` otherwise)."""
    status = confirm.get("dealStatus")
    if status not in ("ACCEPTED", "REJECTED"):
        raise ProtocolError(f"IG confirm {confirm.get('dealReference')} has dealStatus {status!r}")
    return status


def unexpected_status(kind: str, confirm: dict) -> str:
    """A warning if an ACCEPTED confirm's ``status`` does not fit the request, else ''."""
    status = confirm.get("status")
    expected = ACCEPTED_EFFECT[kind][1]
    if status in expected:
        return ""
    return f"IG confirm {confirm.get('dealReference')} of a {kind} has status {status!r}"


def to_float(value: Any, name: str) -> float:
    """A number from IG; ``ProtocolError`` naming the field if it is not one."""
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"IG field {name} is not a number: {value!r}") from exc


def normalize_account(row: dict, realized_pnl: float = 0.0) -> dict:
    """Normalized account_info from one row of GET /accounts."""
    balance = row.get("balance") or {}
    cash = to_float(balance.get("balance", 0), "balance")
    pnl = to_float(balance.get("profitLoss", 0), "profitLoss")
    return {"account": row.get("accountId"), "currency": row.get("currency"), "balance": cash,
            "equity": cash + pnl, "available": to_float(balance.get("available", 0), "available"),
            "margin_used": to_float(balance.get("deposit", 0), "deposit"), "unrealized_pnl": pnl,
            "realized_pnl": realized_pnl}


def normalize_positions(rows: list, to_epic) -> list[dict]:
    """Net MAOTrade positions (one per epic) from GET /positions (v2).

    IG keeps one position per deal; MAOTrade reports the net per instrument with the
    size-weighted average level, marked at the side the position would close on.
    """
    net: dict[str, dict] = {}
    for row in rows:
        pos, market = row.get("position") or {}, row.get("market") or {}
        epic_broker = market.get("epic")
        if not epic_broker:
            raise ProtocolError("IG position without market.epic")
        qty = signed(to_float(pos.get("size"), "size"), pos.get("direction", ""))
        level = to_float(pos.get("level"), "level")
        entry = net.setdefault(epic_broker, {"epic": to_epic(epic_broker), "epicBroker": epic_broker,
                                             "qty": 0.0, "cost": 0.0, "bid": market.get("bid"),
                                             "offer": market.get("offer"), "deals": [],
                                             "stop_loss": pos.get("stopLevel"),
                                             "take_profit": pos.get("limitLevel")})
        entry["qty"] += qty
        entry["cost"] += qty * level
        entry["deals"].append(pos.get("dealId"))
    out = []
    for entry in net.values():
        qty = entry.pop("qty")
        cost = entry.pop("cost")
        bid, offer = entry.pop("bid"), entry.pop("offer")
        if abs(qty) < 1e-12:
            continue
        avg = cost / qty
        mark = None
        if bid is not None and offer is not None:
            mark = float(bid) if qty > 0 else float(offer)
        entry.update(qty=qty, avg_price=avg, market_price=mark,
                     unrealized_pnl=(mark - avg) * qty if mark is not None else 0.0, realized_pnl=0.0)
        out.append(entry)
    return out


def normalize_working_orders(rows: list, to_epic) -> list[dict]:
    """Working orders from GET /workingorders (v2), in MAOTrade order fields."""
    out = []
    for row in rows:
        data = row.get("workingOrderData") or {}
        epic_broker = data.get("epic") or (row.get("marketData") or {}).get("epic")
        out.append({"broker_ref": data.get("dealId"), "epic": to_epic(epic_broker), "epicBroker": epic_broker,
                    "qty": signed(to_float(data.get("orderSize"), "orderSize"), data.get("direction", "")),
                    "order_type": data.get("orderType"), "price": to_float(data.get("orderLevel"), "orderLevel"),
                    "time_in_force": "GTC" if data.get("timeInForce") == "GOOD_TILL_CANCELLED" else "DAY",
                    "status": "ACCEPTED"})
    return out


def chart_bar(epic: str, time_frame: int, update: dict) -> Optional[dict]:
    """Normalized bar from a CHART item's fields; None until the bar has prices.

    OHLC are mid prices (IG streams bid and offer separately); ``completed`` is
    ``CONS_END == "1"``.
    """
    if not update.get("UTM") or update.get("BID_CLOSE") in (None, "") or update.get("OFR_CLOSE") in (None, ""):
        return None

    def mid(side: str) -> float:
        return (to_float(update.get(f"BID_{side}"), f"BID_{side}")
                + to_float(update.get(f"OFR_{side}"), f"OFR_{side}")) / 2

    return make_bar(epic, time_frame, int(to_float(update["UTM"], "UTM")), mid("OPEN"), mid("HIGH"),
                    mid("LOW"), mid("CLOSE"), to_float(update.get("LTV") or 0, "LTV"),
                    completed=str(update.get("CONS_END")) == "1")


def open_position_body(order, epic_broker: str, reference: str, currency: str, expiry: str) -> dict:
    """Body of POST /positions/otc (v2) for a MARKET order."""
    attached = order.stop_loss is not None or order.take_profit is not None
    return {"epic": epic_broker, "expiry": expiry, "direction": direction(order.qty),
            "size": abs(order.qty), "orderType": "MARKET", "timeInForce": "FILL_OR_KILL",
            "guaranteedStop": False, "forceOpen": attached, "currencyCode": currency,
            "stopLevel": order.stop_loss, "limitLevel": order.take_profit, "dealReference": reference}


def working_order_body(order, epic_broker: str, reference: str, currency: str, expiry: str) -> dict:
    """Body of POST /workingorders/otc (v2) for a LIMIT or STOP order."""
    return {"epic": epic_broker, "expiry": expiry, "direction": direction(order.qty),
            "size": abs(order.qty), "level": order.price, "type": order.order_type,
            "timeInForce": "GOOD_TILL_CANCELLED", "guaranteedStop": False, "forceOpen": True,
            "currencyCode": currency, "stopLevel": order.stop_loss, "limitLevel": order.take_profit,
            "dealReference": reference}


def close_plan(positions: list[dict], epic_broker: str, qty: float) -> list[tuple[str, float]]:
    """Which IG deals to close, oldest first, to reduce ``epic_broker`` by signed ``qty``.

    ``positions`` are rows of GET /positions. Raise ``ValueError`` naming the problem when
    there is nothing to close on that side or not enough of it.
    """
    side = "SELL" if qty < 0 else "BUY"  # the close order's direction
    deals = [(r["position"]["dealId"], to_float(r["position"]["size"], "size"), r["position"].get("createdDateUTC", ""))
             for r in positions if (r.get("market") or {}).get("epic") == epic_broker
             and (r.get("position") or {}).get("direction") not in (side, None)]
    total = sum(size for _, size, _ in deals)
    if not deals:
        raise ValueError(f"no open {'long' if qty < 0 else 'short'} position in {epic_broker} to close")
    if abs(qty) > total + 1e-9:
        raise ValueError(f"close of {abs(qty):g} {epic_broker} exceeds the open {total:g}")
    plan, left = [], abs(qty)
    for deal_id, size, _ in sorted(deals, key=lambda d: d[2]):
        if left <= 1e-9:
            break
        take = min(size, left)
        plan.append((deal_id, take))
        left -= take
    return plan


# -- historical prices: GET /prices/{epic} (version 3) ------------------------------------------
# Bar length in seconds -> IG's ``resolution``.
PRICE_RESOLUTIONS = {1: "SECOND", 60: "MINUTE", 120: "MINUTE_2", 180: "MINUTE_3", 300: "MINUTE_5",
                     600: "MINUTE_10", 900: "MINUTE_15", 1800: "MINUTE_30", 3600: "HOUR", 7200: "HOUR_2",
                     10800: "HOUR_3", 14400: "HOUR_4", 86400: "DAY", 604800: "WEEK"}
HISTORY_ALLOWANCE_ERROR = "error.public-api.exceeded-account-historical-data-allowance"


def _ig_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def prices_path(epic_broker: str, time_frame: int, start_ms: int, end_ms: int, page_size: int,
                page_number: int) -> str:
    """Path and query of one page of ``GET /prices/{epic}`` (v3) for bars in ``[start, end)``.

    IG's ``from`` and ``to`` are both inclusive, in UTC without an offset; ``to`` is the
    last second before ``end``.
    """
    query = urlencode({"resolution": PRICE_RESOLUTIONS[time_frame], "from": _ig_time(start_ms),
                       "to": _ig_time(end_ms - 1000), "pageSize": page_size, "pageNumber": page_number})
    return f"/prices/{quote(epic_broker, safe='')}?{query}"


def _price_mid(point: Any, name: str) -> float:
    if not isinstance(point, dict):
        raise ProtocolError(f"IG price field {name} is not an object: {point!r}")
    bid, ask = point.get("bid"), point.get("ask")
    if bid is not None and ask is not None:
        return (to_float(bid, f"{name}.bid") + to_float(ask, f"{name}.ask")) / 2
    one = next((v for v in (bid, ask, point.get("lastTraded")) if v is not None), None)
    return to_float(one, name)


def price_bars(epic: str, time_frame: int, body: Any) -> list[dict]:
    """Normalized bars (mid prices) of one page of IG's ``prices``, in date order."""
    rows = body.get("prices") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise ProtocolError("IG /prices answer has no 'prices' list")
    bars = []
    for row in rows:
        stamp = row.get("snapshotTimeUTC") if isinstance(row, dict) else None
        if not isinstance(stamp, str):
            raise ProtocolError(f"IG price row without snapshotTimeUTC: {row!r}")
        try:
            moment = datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc)
        except ValueError:
            raise ProtocolError(f"IG snapshotTimeUTC {stamp!r} is not a time") from None
        bars.append(make_bar(epic, time_frame, int(moment.timestamp() * 1000), _price_mid(row.get("openPrice"), "openPrice"),
                             _price_mid(row.get("highPrice"), "highPrice"), _price_mid(row.get("lowPrice"), "lowPrice"),
                             _price_mid(row.get("closePrice"), "closePrice"),
                             to_float(row.get("lastTradedVolume") or 0, "lastTradedVolume")))
    bars.sort(key=lambda b: b["date"])
    return bars


def price_allowance(body: Any) -> Optional[dict]:
    """IG's historical-data allowance from a prices answer: points left, total, seconds to reset."""
    allowance = ((body or {}).get("metadata") or {}).get("allowance") if isinstance(body, dict) else None
    if not isinstance(allowance, dict):
        return None
    return {"remaining": int(allowance.get("remainingAllowance") or 0),
            "total": int(allowance.get("totalAllowance") or 0),
            "reset_s": int(allowance.get("allowanceExpiry") or 0)}


def price_pages(body: Any) -> tuple[int, int]:
    """``(pageNumber, totalPages)`` of a prices answer (1, 1 when IG did not page it)."""
    page = (((body or {}).get("metadata") or {}).get("pageData") or {}) if isinstance(body, dict) else {}
    return int(page.get("pageNumber") or 1), int(page.get("totalPages") or 1)
