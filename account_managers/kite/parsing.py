"""Pure translation between MAOTrade and Kite Connect: order parameters, order states,
fills, account and portfolio, instruments, candles and errors. No I/O here."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any, Callable, Optional
from zoneinfo import ZoneInfo

import requests
from kiteconnect import exceptions as kex

from maotrade.bars import make_bar
from maotrade.errors import (AuthenticationError, BrokerUnavailable, InvalidOrder, MAOTradeError,
                             ProtocolError)
from maotrade.order import BaseOrder, Fill, OrderStatus, OrderType, TimeInForce

IST = ZoneInfo("Asia/Kolkata")
TAG_LENGTH = 20  # Kite's limit on `tag`
TAG_PREFIX = "mt"

# Kite's order statuses -> MAOTrade's. Kite reports several transient states while an
# order travels through its OMS; they all mean "with the broker, not yet working".
STATUS = {
    "PUT ORDER REQ RECEIVED": OrderStatus.SUBMITTED,
    "VALIDATION PENDING": OrderStatus.SUBMITTED,
    "OPEN PENDING": OrderStatus.SUBMITTED,
    "MODIFY VALIDATION PENDING": OrderStatus.ACCEPTED,
    "MODIFY PENDING": OrderStatus.ACCEPTED,
    "MODIFIED": OrderStatus.ACCEPTED,
    "CANCEL PENDING": OrderStatus.ACCEPTED,
    "TRIGGER PENDING": OrderStatus.ACCEPTED,
    "AMO REQ RECEIVED": OrderStatus.ACCEPTED,
    "UPDATE": OrderStatus.ACCEPTED,
    "OPEN": OrderStatus.ACCEPTED,
    "COMPLETE": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
}
VALIDITY = {TimeInForce.DAY: "DAY", TimeInForce.GTC: "DAY", TimeInForce.IOC: "IOC"}

# Time frames of bars built from ticks, and of the historical API, by seconds.
DATA_FRAMES = {1: "1s", 5: "5s", 60: "minute", 300: "5minute", 900: "15minute", 3600: "60minute"}
HISTORY_FRAMES = {60: "minute", 180: "3minute", 300: "5minute", 600: "10minute", 900: "15minute",
                  1800: "30minute", 3600: "60minute", -1: "day"}

# Longest span of one historical request Kite serves, in days, by interval.
HISTORY_SPAN_DAYS = {"minute": 60, "3minute": 100, "5minute": 100, "10minute": 100, "15minute": 200,
                     "30minute": 200, "60minute": 400, "day": 2000}
DAY_SECONDS = 86400

# Kite's error_type -> what the caller must do. Anything not listed is a server fault.
_ERRORS: dict[type, type[MAOTradeError]] = {
    kex.TokenException: AuthenticationError,
    kex.PermissionException: AuthenticationError,
    kex.InputException: InvalidOrder,
    kex.OrderException: InvalidOrder,
    kex.NetworkException: BrokerUnavailable,
    kex.DataException: BrokerUnavailable,
    kex.GeneralException: BrokerUnavailable,
}


class TokenExpired(AuthenticationError):
    """Kite refused the access token (expired daily, or revoked): a new login is needed."""


def translate_error(exc: BaseException, what: str) -> MAOTradeError:
    """Return the MAOTrade error for a failure of the Kite call described by ``what``.

    ``TokenExpired`` for a refused token; ``InvalidOrder`` for input and order errors
    (never retry); ``BrokerUnavailable`` for network, OMS and transport failures (an
    order's outcome is then unknown); other MAOTrade errors pass through.
    """
    if isinstance(exc, MAOTradeError):
        return exc
    if isinstance(exc, kex.TokenException):
        return TokenExpired(f"{what}: token refused by Kite ({exc})")
    if isinstance(exc, kex.KiteException):
        kind = next((target for source, target in _ERRORS.items() if isinstance(exc, source)),
                    BrokerUnavailable)
        return kind(f"{what}: {type(exc).__name__} ({exc.code}): {exc}")
    if isinstance(exc, (requests.RequestException, OSError)):
        return BrokerUnavailable(f"{what}: Kite unreachable: {type(exc).__name__}: {exc}")
    return ProtocolError(f"{what}: unexpected answer from Kite: {type(exc).__name__}: {exc}")


# -- identifiers ----------------------------------------------------------------------------
def tag_for(client_order_id: str) -> str:
    """Return the 20-character Kite ``tag`` of a client order id (same id, same tag).

    A digest rather than a cut: client order ids are up to 33 characters, and two ids
    sharing their first 20 (``x/SL`` and ``x/TP``) must not share a tag.
    """
    digest = hashlib.sha256(client_order_id.encode()).digest()
    body = base64.b32encode(digest).decode().lower().rstrip("=")
    return (TAG_PREFIX + body)[:TAG_LENGTH]


def split_epic(epic_broker: str) -> tuple[str, str]:
    """Split ``EXCHANGE:TRADINGSYMBOL`` (Kite's instrument key) into its two parts."""
    exchange, sep, symbol = (epic_broker or "").partition(":")
    if not sep or not exchange or not symbol:
        raise InvalidOrder(f"broker instrument {epic_broker!r} is not EXCHANGE:TRADINGSYMBOL (e.g. NSE:INFY)")
    return exchange.upper(), symbol


# -- orders ---------------------------------------------------------------------------------
def order_params(order: BaseOrder, epic_broker: str, product: str, variety: str,
                 stop_limit_offset: float = 0.0, tick_size: float = 0.05) -> dict:
    """Return the keyword arguments of ``KiteConnect.place_order`` for ``order``.

    Prices and triggers go rounded to the nearest ``tick_size`` (Kite refuses any other):
    a stop loss the engine derived from a fraction of the entry still goes out."""
    key = order.client_order_id
    exchange, symbol = split_epic(epic_broker)
    quantity = abs(order.qty)
    if quantity != int(quantity):
        raise InvalidOrder(f"order {key}: Kite trades whole quantities, got {order.qty:g}")
    validity = VALIDITY.get(order.time_in_force)
    if validity is None:
        raise InvalidOrder(f"order {key}: time in force {order.time_in_force} is not offered by Kite "
                           f"(DAY, IOC; GTC is sent as DAY)")
    buy = order.qty > 0
    params = {"variety": variety, "exchange": exchange, "tradingsymbol": symbol,
              "transaction_type": "BUY" if buy else "SELL", "quantity": int(quantity),
              "product": product, "validity": validity, "tag": tag_for(key)}
    if order.order_type == OrderType.MARKET:
        params["order_type"] = "MARKET"
    elif order.order_type == OrderType.LIMIT:
        params.update(order_type="LIMIT", price=round_to_tick(order.price, tick_size))
    elif order.order_type == OrderType.STOP:
        params["trigger_price"] = round_to_tick(order.price, tick_size)
        if stop_limit_offset > 0:
            # A stop-limit a little beyond the trigger: fills like a market order in a
            # normal market, but never at any price in a gap.
            factor = 1 + stop_limit_offset if buy else 1 - stop_limit_offset
            params.update(order_type="SL", price=round_to_tick(order.price * factor, tick_size))
        else:
            params["order_type"] = "SL-M"
    else:
        raise InvalidOrder(f"order {key}: order type {order.order_type} is not offered by Kite")
    return params


def modify_params(order: BaseOrder, tick_size: float = 0.05) -> dict:
    """Return the fields ``modify_order`` changes: the price (or trigger) of a working order,
    rounded to the nearest ``tick_size``."""
    if order.order_type == OrderType.LIMIT:
        return {"price": round_to_tick(order.price, tick_size)}
    if order.order_type == OrderType.STOP:
        return {"trigger_price": round_to_tick(order.price, tick_size)}
    raise InvalidOrder(f"order {order.client_order_id}: a {order.order_type} order has no price to amend")


def round_to_tick(price: float, tick_size: float) -> float:
    """Round ``price`` to the nearest multiple of ``tick_size``."""
    return round(round(price / tick_size) * tick_size, 6)


def kite_status(row: dict) -> str:
    """Return the MAOTrade state an order row of Kite (REST or ticker) stands for."""
    status = str(row.get("status") or "").upper()
    if status not in STATUS:
        raise ProtocolError(f"Kite order {row.get('order_id')} has unknown status {status!r}")
    return STATUS[status]


def fill_from_trade(trade: dict) -> Fill:
    """Return the fill of one row of Kite's trades (keyed by its trade id)."""
    try:
        return Fill(exec_id=str(trade["trade_id"]), qty=abs(float(trade["quantity"])),
                    price=float(trade["average_price"]),
                    time=to_epoch_ms(trade.get("fill_timestamp") or trade.get("exchange_timestamp")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"Kite trade {trade.get('trade_id')!r} is malformed: {exc}") from None


def to_epoch_ms(value: Any) -> int:
    """Epoch ms of a Kite timestamp (``datetime`` or ``YYYY-MM-DD HH:MM:SS``, exchange time)."""
    if value is None or value == "":
        return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=IST)
    return int(value.timestamp() * 1000)


# -- account and portfolio --------------------------------------------------------------------
def account_info(account: str, margins: dict, positions: dict) -> dict:
    """Normalize ``margins()`` (every enabled segment) and the P&L of ``positions()['net']``."""
    segments = {name: seg for name, seg in (margins or {}).items()
                if isinstance(seg, dict) and seg.get("enabled", True)}
    cash = sum(_num((s.get("available") or {}).get("cash")) for s in segments.values())
    used = sum(_num((s.get("utilised") or {}).get("debits")) for s in segments.values())
    net = sum(_num(s.get("net")) for s in segments.values())
    rows = (positions or {}).get("net") or []
    unrealized = sum(_num(r.get("unrealised")) for r in rows)
    realized = sum(_num(r.get("realised")) for r in rows)
    return {"account": account, "currency": "INR", "balance": cash, "equity": cash + unrealized,
            "available": net, "margin_used": used, "unrealized_pnl": unrealized,
            "realized_pnl": realized,
            "segments": {name: {"net": _num(s.get("net")),
                                "cash": _num((s.get("available") or {}).get("cash")),
                                "debits": _num((s.get("utilised") or {}).get("debits"))}
                         for name, s in segments.items()}}


def portfolio_positions(positions: dict, holdings: list, to_epic: Callable[[str], str]) -> list[dict]:
    """Net positions per instrument: holdings plus the day's net positions, every product.

    Kite shows a sale of delivery holdings as a negative CNC net position while the
    holding still lists the shares, so the account's quantity is the sum of both.
    """
    book: dict[str, dict] = {}

    def add(key: str, qty: float, price: float, last: float, unrealized: float, realized: float):
        row = book.setdefault(key, {"epic": to_epic(key), "epicBroker": key, "qty": 0.0, "cost": 0.0,
                                    "market_price": last, "unrealized_pnl": 0.0, "realized_pnl": 0.0})
        row["qty"] += qty
        row["cost"] += qty * price
        row["market_price"] = last or row["market_price"]
        row["unrealized_pnl"] += unrealized
        row["realized_pnl"] += realized

    for h in holdings or []:
        qty = _num(h.get("quantity")) + _num(h.get("t1_quantity"))
        if qty:
            add(f"{h.get('exchange')}:{h.get('tradingsymbol')}", qty, _num(h.get("average_price")),
                _num(h.get("last_price")), _num(h.get("pnl")), 0.0)
    for p in (positions or {}).get("net") or []:
        add(f"{p.get('exchange')}:{p.get('tradingsymbol')}", _num(p.get("quantity")),
            _num(p.get("average_price")), _num(p.get("last_price")), _num(p.get("unrealised")),
            _num(p.get("realised")))
    out = []
    for row in book.values():
        cost = row.pop("cost")
        if row["qty"]:
            row["avg_price"] = cost / row["qty"]
            out.append(row)
    return out


def working_orders(rows: list, tag_owner: Callable[[str], Optional[str]],
                   to_epic: Callable[[str], str]) -> list[dict]:
    """Kite's open orders (OPEN, TRIGGER PENDING, AMO...) in the portfolio's order shape."""
    out = []
    for row in rows or []:
        status = STATUS.get(str(row.get("status") or "").upper())
        if status not in (OrderStatus.ACCEPTED, OrderStatus.SUBMITTED):
            continue
        key = f"{row.get('exchange')}:{row.get('tradingsymbol')}"
        sign = 1 if row.get("transaction_type") == "BUY" else -1
        out.append({"client_order_id": tag_owner(row.get("tag") or "") or "", "broker_ref": str(row.get("order_id")),
                    "epic": to_epic(key), "epicBroker": key, "qty": sign * _num(row.get("pending_quantity")),
                    "order_type": row.get("order_type"), "price": _num(row.get("price")) or None,
                    "trigger_price": _num(row.get("trigger_price")) or None, "status": status})
    return out


# -- market data ------------------------------------------------------------------------------
def instrument_tokens(rows: list) -> dict[str, dict]:
    """``EXCHANGE:TRADINGSYMBOL`` -> {token, tick_size, lot_size} from the instruments dump."""
    return {f"{r['exchange']}:{r['tradingsymbol']}": {"token": int(r["instrument_token"]),
                                                      "tick_size": float(r.get("tick_size") or 0.05),
                                                      "lot_size": int(r.get("lot_size") or 1)}
            for r in rows}


def tick_price(tick: dict) -> Optional[tuple[float, float, Optional[int]]]:
    """``(last_price, day volume, exchange time ms or None)`` of a parsed KiteTicker tick."""
    price = tick.get("last_price")
    if not isinstance(price, (int, float)) or price <= 0:
        return None
    stamp = tick.get("exchange_timestamp") or tick.get("last_trade_time")
    when = int(stamp.timestamp() * 1000) if isinstance(stamp, dt.datetime) else None
    return float(price), float(tick.get("volume_traded") or 0), when


def candles_to_bars(epic: str, time_frame: int, rows: list) -> list[dict]:
    """Bars of ``historical_data`` rows (``date`` parsed by kiteconnect, with its offset)."""
    return [make_bar(epic, time_frame, to_epoch_ms(r["date"]), r["open"], r["high"], r["low"],
                     r["close"], r.get("volume") or 0) for r in rows]


def _num(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def history_interval(time_frame: int) -> str:
    """Kite's interval name for a time frame in seconds (``86400`` or ``-1`` is a day)."""
    interval = HISTORY_FRAMES.get(-1 if time_frame == DAY_SECONDS else int(time_frame))
    if interval is None:
        raise InvalidOrder(f"time frame {time_frame}s not offered by Kite's historical API; "
                           f"choose one of {sorted(t for t in HISTORY_FRAMES if t > 0)} or {DAY_SECONDS}")
    return interval


def history_pages(start_ms: int, end_ms: int, interval: str) -> list[tuple[dt.datetime, dt.datetime]]:
    """Split ``[start, end)`` into spans Kite serves in one request (exchange-time datetimes)."""
    span = dt.timedelta(days=HISTORY_SPAN_DAYS[interval])
    start = dt.datetime.fromtimestamp(start_ms / 1000, IST).replace(tzinfo=None)
    end = dt.datetime.fromtimestamp(end_ms / 1000, IST).replace(tzinfo=None)
    pages = []
    while start < end:
        pages.append((start, min(end, start + span)))
        start = pages[-1][1]
    return pages
