"""Pure translation between MAOTrade and Interactive Brokers (no I/O, no clock).

Epic mapping format, order parameters, IB order statuses and error codes, fills,
account values, portfolio rows and bars. Status and error maps are module-level
tables so that the next engineer can read (and extend) them at a glance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from maotrade.bars import make_bar
from maotrade.errors import InvalidOrder
from maotrade.order import BaseOrder, Leg, OrderStatus, OrderType, child_id

SEC_TYPES = frozenset({"STK", "CASH", "FUT", "IND", "CFD", "CMDTY", "CRYPTO", "BOND", "FUND"})


@dataclass(frozen=True)
class ContractSpec:
    """An IB contract as written in the epic mapping:
    ``SYMBOL-CURRENCY-SECTYPE-EXCHANGE[-EXPIRY]``."""

    symbol: str
    currency: str
    sec_type: str
    exchange: str
    expiry: str = ""

    @property
    def key(self) -> tuple:
        """What identifies the instrument in IB's answers, which may omit the exchange."""
        return (self.symbol, self.currency, self.sec_type, self.expiry[:6])


def parse_epic_broker(text: str) -> ContractSpec:
    """Parse ``SPY-USD-STK-SMART`` / ``ES-USD-FUT-CME-202412``; ``InvalidOrder`` if malformed."""
    parts = str(text or "").split("-")
    if len(parts) not in (4, 5) or not all(parts):
        raise InvalidOrder(f"epicBroker {text!r} is not SYMBOL-CURRENCY-SECTYPE-EXCHANGE[-EXPIRY]")
    symbol, currency, sec_type, exchange = (p.strip().upper() for p in parts[:4])
    expiry = parts[4].strip() if len(parts) == 5 else ""
    if sec_type not in SEC_TYPES:
        raise InvalidOrder(f"epicBroker {text!r}: unknown security type {sec_type!r}")
    if len(currency) != 3:
        raise InvalidOrder(f"epicBroker {text!r}: currency {currency!r} is not a 3-letter code")
    if expiry and not (expiry.isdigit() and len(expiry) in (6, 8)):
        raise InvalidOrder(f"epicBroker {text!r}: expiry {expiry!r} is not YYYYMM or YYYYMMDD")
    if sec_type == "FUT" and not expiry:
        raise InvalidOrder(f"epicBroker {text!r}: a future needs an expiry (YYYYMM)")
    return ContractSpec(symbol, currency, sec_type, exchange, expiry)


def contract_key(symbol: str, currency: str, sec_type: str, expiry: str) -> tuple:
    """The ``ContractSpec.key`` of a contract IB reported."""
    return (symbol, currency, sec_type, (expiry or "")[:6])


# --- orders -------------------------------------------------------------------------

ORDER_TYPES = {OrderType.MARKET: "MKT", OrderType.LIMIT: "LMT", OrderType.STOP: "STP"}
TIME_IN_FORCE = {"GTC": "GTC", "DAY": "DAY", "IOC": "IOC", "FOK": "FOK"}
# Bracket children carry the engine's leg ids (``maotrade.order.child_id``) as orderRef.
STOP_LOSS_SUFFIX = "/" + Leg.STOP_LOSS
TAKE_PROFIT_SUFFIX = "/" + Leg.TAKE_PROFIT


@dataclass(frozen=True)
class OrderParams:
    """What an IB ``Order`` needs from a MAOTrade order."""

    action: str
    quantity: float
    order_type: str
    limit_price: Optional[float]
    stop_price: Optional[float]
    tif: str
    order_ref: str


def order_params(order: BaseOrder) -> OrderParams:
    """Translate a validated MAOTrade order; ``InvalidOrder`` names what IB cannot take."""
    ib_type = ORDER_TYPES.get(order.order_type)
    if ib_type is None:
        raise InvalidOrder(f"order {order.client_order_id}: order type {order.order_type!r} "
                           "is not supported for IB")
    tif = TIME_IN_FORCE.get(order.time_in_force)
    if tif is None:
        raise InvalidOrder(f"order {order.client_order_id}: time in force "
                           f"{order.time_in_force!r} is not supported for IB")
    return OrderParams(
        action="BUY" if order.qty > 0 else "SELL", quantity=abs(float(order.qty)),
        order_type=ib_type,
        limit_price=order.price if ib_type == "LMT" else None,
        stop_price=order.price if ib_type == "STP" else None,
        tif=tif, order_ref=order.client_order_id)


def child_ref(client_order_id: str, suffix: str) -> str:
    """orderRef of a bracket child (stop loss or take profit) of an engine order."""
    return child_id(client_order_id, suffix[1:])


def parent_ref(order_ref: str) -> tuple[str, str]:
    """Split an orderRef into (engine client order id, child suffix or "")."""
    for suffix in (STOP_LOSS_SUFFIX, TAKE_PROFIT_SUFFIX):
        if order_ref.endswith(suffix):
            return order_ref[:-len(suffix)], suffix
    return order_ref, ""


# IB order status -> MAOTrade status. ``None``: no state change of its own (fills move
# orders to PARTIALLY_FILLED/FILLED, so that a fill is never counted from a status).
IB_STATUS = {
    "ApiPending": OrderStatus.SUBMITTED,
    "PendingSubmit": OrderStatus.SUBMITTED,
    "PreSubmitted": OrderStatus.ACCEPTED,
    "Submitted": OrderStatus.ACCEPTED,
    "PendingCancel": None,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Cancelled": OrderStatus.CANCELLED,
    "Inactive": OrderStatus.REJECTED,
    "Filled": None,
}

# Error codes that end an order as refused by IB (the order never worked).
ORDER_REJECT_CODES = {
    103: "duplicate order id", 104: "cannot modify a filled order",
    105: "order being modified does not match", 106: "cannot transmit order id",
    107: "cannot transmit incomplete order", 109: "price out of range",
    110: "price does not conform to the minimum price variation", 111: "tif and order type incompatible",
    113: "tif should be DAY for MOC/LOC", 116: "invalid exchange", 117: "block order size too small",
    118: "VWAP order timing", 119: "only VWAP orders may be placed on the VWAP exchange",
    135: "cannot find order with id", 136: "order cannot be cancelled", 161: "cancel attempted when order not working",
    163: "order price exceeds the price cap", 200: "no security definition found",
    201: "order rejected", 203: "security not available or allowed for this account",
    321: "error validating request", 382: "size exceeds the limit", 383: "size exceeds the limit",
    387: "unsupported order type for this exchange", 388: "order size smaller than minimum",
    10147: "order to cancel not found", 10148: "order cannot be cancelled in this state",
}
# A failed request about an order that already works (amend, cancel) leaves it working,
# although ib_insync marks the trade Cancelled when any such error arrives.
WORKING_ORDER_REQUEST_CODES = frozenset({104, 105, 106, 107, 109, 110, 135, 136, 161, 10147, 10148})
ORDER_CANCEL_CODES = {202: "order cancelled"}
# Codes that are notices about an order, never its end.
ORDER_WARNING_CODES = {399: "order message (warning)", 404: "shares not available for short sale",
                       434: "order size is zero", 10167: "delayed market data"}

# Connectivity between TWS and IB's servers: connection state changes, not order errors.
CONNECTIVITY_LOST = {1100: "connectivity between IB and TWS has been lost",
                     2110: "connectivity between TWS and server is broken"}
CONNECTIVITY_RESTORED_DATA_LOST = {1101: "connectivity restored, data lost: resubscribe"}
CONNECTIVITY_RESTORED = {1102: "connectivity restored, data maintained"}
FARM_BROKEN = {2103: "market data farm disconnected", 2105: "historical data farm disconnected",
               2157: "sec-def data farm disconnected"}
FARM_OK = {2104: "market data farm OK", 2106: "historical data farm OK", 2107: "historical data farm inactive",
           2108: "market data farm inactive", 2158: "sec-def data farm OK", 2109: "order event outside RTH"}
CLIENT_ID_IN_USE = 326
PACING_VIOLATION = 162
NO_SECURITY_DEFINITION = 200


def connectivity_change(code: int) -> Optional[str]:
    """Return "lost", "restored", "restored_data_lost", "farm_broken", "farm_ok" or None."""
    if code in CONNECTIVITY_LOST:
        return "lost"
    if code in CONNECTIVITY_RESTORED_DATA_LOST:
        return "restored_data_lost"
    if code in CONNECTIVITY_RESTORED:
        return "restored"
    if code in FARM_BROKEN:
        return "farm_broken"
    if code in FARM_OK:
        return "farm_ok"
    return None


def status_target(order: BaseOrder, ib_status: str, error_code: int = 0, message: str = "") \
        -> Optional[tuple[str, str]]:
    """Return (MAOTrade status, reason) that an IB status report moves ``order`` to, or None.

    A cancellation caused by a rejection code becomes REJECTED when the order has not
    worked yet, CANCELLED (with IB's message as reason) when it had.
    """
    target = IB_STATUS.get(ib_status)
    if target is None:
        return None
    reason = _reason(error_code, message)
    if (target == OrderStatus.CANCELLED and error_code in WORKING_ORDER_REQUEST_CODES
            and order.status not in (OrderStatus.NEW, OrderStatus.SUBMITTED)):
        return None
    if target == OrderStatus.CANCELLED and error_code in ORDER_REJECT_CODES:
        target = OrderStatus.REJECTED
    if target == OrderStatus.REJECTED:
        reason = reason or f"IB reported the order {ib_status}"
        if not order.can_move_to(OrderStatus.REJECTED):
            target = OrderStatus.CANCELLED
    if order.status == target or not order.can_move_to(target):
        return None
    return target, reason


def _reason(code: int, message: str) -> str:
    if not code:
        return ""
    text = message.split(": ", 1)[1] if message.startswith(("Error ", "Warning ")) and ": " in message \
        else message
    return f"IB {code}: {text}".strip()


# --- accounts -----------------------------------------------------------------------

ACCOUNT_TAGS = {
    "NetLiquidation": "equity",
    "TotalCashValue": "balance",
    "AvailableFunds": "available",
    "BuyingPower": "buying_power",
    "MaintMarginReq": "margin_used",
    "InitMarginReq": "initial_margin",
    "UnrealizedPnL": "unrealized_pnl",
    "RealizedPnL": "realized_pnl",
}


def normalize_account(account: str, values: list[tuple[str, str, str]]) -> dict:
    """Normalize ``(tag, value, currency)`` rows of one account into MAOTrade's keys.

    IB repeats some tags per currency and as BASE; the row in the account's base
    currency (the NetLiquidation currency) wins.
    """
    base = next((cur for tag, _, cur in values if tag == "NetLiquidation" and cur not in ("", "BASE")), "")
    info: dict = {"account": account, "currency": base}
    for tag, value, currency in values:
        key = ACCOUNT_TAGS.get(tag)
        if key is None or (currency and base and currency != base):
            continue
        try:
            info[key] = float(value)
        except (TypeError, ValueError):
            continue
    for key in ("balance", "equity", "available", "margin_used", "unrealized_pnl", "realized_pnl"):
        info.setdefault(key, 0.0)
    return info


def normalize_position(epic: str, epic_broker: str, qty: float, avg_cost: float, multiplier: float,
                       market_price: float, unrealized: float, realized: float) -> dict:
    """Normalize one IB portfolio row; IB's average cost includes the multiplier."""
    mult = multiplier or 1.0
    return {"epic": epic, "epicBroker": epic_broker, "qty": float(qty),
            "avg_price": float(avg_cost) / mult, "market_price": float(market_price),
            "unrealized_pnl": float(unrealized), "realized_pnl": float(realized)}


def to_multiplier(text) -> float:
    """IB's multiplier string ('' for 1, '50' for ES) as a number."""
    try:
        return float(text) if text not in ("", None) else 1.0
    except ValueError:
        return 1.0


# --- market data ----------------------------------------------------------------------

BAR_SIZES = {1: "1 secs", 5: "5 secs", 10: "10 secs", 15: "15 secs", 30: "30 secs", 60: "1 min",
             120: "2 mins", 180: "3 mins", 300: "5 mins", 900: "15 mins", 1800: "30 mins",
             3600: "1 hour", 14400: "4 hours", 86400: "1 day"}
REALTIME_BAR_SECONDS = 5


def history_duration(time_frame: int, count: int) -> str:
    """IB duration string covering ``count`` bars of ``time_frame`` seconds."""
    seconds = int(time_frame) * int(count)
    if seconds <= 86400:
        return f"{max(seconds, 60)} S"
    return f"{-(-seconds // 86400)} D"


def bar_from_ib(epic: str, time_frame: int, start_ms: int, open_: float, high: float, low: float,
                close: float, volume: float, completed: bool = True) -> dict:
    """A normalized bar from IB numbers; IB's -1 volume (no volume for FX) becomes 0."""
    return make_bar(epic, time_frame, start_ms, open_, high, low, close, max(float(volume), 0.0),
                    completed)


# The longest duration IB serves in one historical request, by bar size (seconds -> seconds),
# from IB's table of valid duration and bar size combinations.
MAX_HISTORY_SPAN_S = {1: 1800, 5: 3600, 10: 14400, 15: 14400, 30: 28800, 60: 86400, 120: 172800,
                      180: 172800, 300: 604800, 900: 1209600, 1800: 2419200, 3600: 2592000,
                      14400: 2592000, 86400: 31536000}
NO_DATA_TEXT = "returned no data"  # error 162 that only means an empty span (a weekend, a holiday)
# Errors that end a historical data request: HMDS errors and pacing (162), no security
# definition (200), invalid request (321), no market data permissions (354), no such query (366).
HISTORY_ERROR_CODES = frozenset({162, 200, 321, 354, 366})


def history_chunks(start_ms: int, end_ms: int, time_frame: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into spans IB serves in one request each (newest span last)."""
    longest = MAX_HISTORY_SPAN_S[time_frame] * 1000
    if longest > 86_400_000:
        longest -= longest % 86_400_000  # durations past a day are whole days
    out, cursor = [], start_ms
    while cursor < end_ms:
        out.append((cursor, min(end_ms, cursor + longest)))
        cursor += longest
    return out


def span_duration(start_ms: int, end_ms: int) -> str:
    """IB duration string reaching back from ``end`` to ``start`` (whole days past one day)."""
    seconds = -(-(end_ms - start_ms) // 1000)
    if seconds <= 86400:
        return f"{max(seconds, 1)} S"
    return f"{-(-seconds // 86400)} D"
