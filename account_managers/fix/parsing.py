"""Pure translation between MAOTrade orders and FIX 4.4 application messages.

Nothing here touches a socket: functions take orders or parsed messages and return
field lists or small records. The wire keeps FIX's spelling; tag numbers are named in
``Tag`` so the code reads as the specification does.
"""
from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import Optional

import simplefix

from maotrade.errors import InvalidOrder, ProtocolError
from maotrade.order import BaseOrder, OrderStatus, OrderType, TimeInForce


class Tag:
    """FIX 4.4 tag numbers used by this broker."""

    Account = 1
    AvgPx = 6
    BeginSeqNo = 7
    BeginString = 8
    ClOrdID = 11
    Commission = 12
    CumQty = 14
    EndSeqNo = 16
    ExecID = 17
    LastPx = 31
    LastQty = 32
    MsgSeqNum = 34
    MsgType = 35
    NewSeqNo = 36
    OrderID = 37
    OrderQty = 38
    OrdStatus = 39
    OrdType = 40
    OrigClOrdID = 41
    PossDupFlag = 43
    Price = 44
    RefSeqNum = 45
    SenderCompID = 49
    SendingTime = 52
    Side = 54
    Symbol = 55
    TargetCompID = 56
    Text = 58
    TimeInForce = 59
    TransactTime = 60
    StopPx = 99
    EncryptMethod = 98
    OrdRejReason = 103
    HeartBtInt = 108
    TestReqID = 112
    OrigSendingTime = 122
    GapFillFlag = 123
    ResetSeqNumFlag = 141
    NoRelatedSym = 146
    ExecType = 150
    LeavesQty = 151
    MDReqID = 262
    SubscriptionRequestType = 263
    MarketDepth = 264
    MDUpdateType = 265
    NoMDEntryTypes = 267
    NoMDEntries = 268
    MDEntryType = 269
    MDEntryPx = 270
    MDEntrySize = 271
    MDUpdateAction = 279
    MDReqRejReason = 281
    RefTagID = 371
    RefMsgType = 372
    SessionRejectReason = 373
    BusinessRejectRefID = 379
    BusinessRejectReason = 380
    CxlRejResponseTo = 434
    Username = 553
    Password = 554
    AccountType = 581
    NoPositions = 702
    PosType = 703
    LongQty = 704
    ShortQty = 705
    PosReqID = 710
    ClearingBusinessDate = 715
    PosReqType = 724
    TotalNumPosReports = 727
    PosReqResult = 728
    SettlPrice = 730


class MsgType:
    """FIX 4.4 message types this broker sends or understands."""

    HEARTBEAT = "0"
    TEST_REQUEST = "1"
    RESEND_REQUEST = "2"
    REJECT = "3"
    SEQUENCE_RESET = "4"
    LOGOUT = "5"
    LOGON = "A"
    EXECUTION_REPORT = "8"
    ORDER_CANCEL_REJECT = "9"
    NEW_ORDER_SINGLE = "D"
    ORDER_CANCEL_REQUEST = "F"
    ORDER_CANCEL_REPLACE_REQUEST = "G"
    ORDER_STATUS_REQUEST = "H"
    MARKET_DATA_REQUEST = "V"
    MARKET_DATA_SNAPSHOT = "W"
    MARKET_DATA_INCREMENTAL = "X"
    MARKET_DATA_REQUEST_REJECT = "Y"
    BUSINESS_MESSAGE_REJECT = "j"
    REQUEST_FOR_POSITIONS = "AN"
    REQUEST_FOR_POSITIONS_ACK = "AO"
    POSITION_REPORT = "AP"

    ADMIN = frozenset({HEARTBEAT, TEST_REQUEST, RESEND_REQUEST, REJECT, SEQUENCE_RESET, LOGOUT, LOGON})


ORD_TYPE = {OrderType.MARKET: "1", OrderType.LIMIT: "2", OrderType.STOP: "3"}
TIME_IN_FORCE = {TimeInForce.DAY: "0", TimeInForce.GTC: "1", TimeInForce.IOC: "3", TimeInForce.FOK: "4"}
SIDE_BUY, SIDE_SELL = "1", "2"

#: OrdStatus (39) -> MAOTrade status; None means "no change of state" (pending states).
ORD_STATUS = {
    "0": OrderStatus.ACCEPTED, "1": OrderStatus.PARTIALLY_FILLED, "2": OrderStatus.FILLED,
    "3": None, "4": OrderStatus.CANCELLED, "5": None, "6": None, "7": None,
    "8": OrderStatus.REJECTED, "9": None, "A": OrderStatus.SUBMITTED, "B": None,
    "C": OrderStatus.EXPIRED, "D": None, "E": None,
}

#: ExecType (150) -> what the report means for the order.
EXEC_TYPE = {
    "0": "new", "A": "pending_new", "F": "trade", "4": "canceled", "5": "replaced",
    "8": "rejected", "C": "expired", "I": "status", "6": "pending_cancel",
    "E": "pending_replace", "3": "done_for_day", "D": "restated", "H": "trade_cancel",
}

#: SessionRejectReason (373) -> words, for one-line errors.
SESSION_REJECT_REASON = {
    "0": "invalid tag number", "1": "required tag missing", "2": "tag not defined for this message type",
    "3": "undefined tag", "4": "tag specified without a value", "5": "value is incorrect for this tag",
    "6": "incorrect data format", "9": "CompID problem", "10": "SendingTime accuracy problem",
    "11": "invalid MsgType", "13": "tag appears more than once", "14": "tag out of required order",
    "15": "repeating group fields out of order", "16": "incorrect NumInGroup count",
    "99": "other",
}

#: BusinessRejectReason (380) -> words.
BUSINESS_REJECT_REASON = {
    "0": "other", "1": "unknown ID", "2": "unknown security", "3": "unsupported message type",
    "4": "application not available", "5": "conditionally required field missing",
    "6": "not authorized", "7": "DeliverTo firm not available",
}

#: MDEntryType (269) values the bars are built from, best first.
MD_PRICE_TYPES = ("2", "0", "1")  # trade, bid, offer


def text(msg: simplefix.FixMessage, tag: int) -> Optional[str]:
    """Return a field as ``str`` (None when absent)."""
    value = msg.get(tag)
    return None if value is None else value.decode("utf-8", "replace")


def number(msg: simplefix.FixMessage, tag: int, default: Optional[float] = None) -> Optional[float]:
    """Return a numeric field as float; ``ProtocolError`` naming the tag if it is not a number."""
    value = msg.get(tag)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ProtocolError(f"tag {tag} is not a number: {value[:20]!r}") from None


def required(msg: simplefix.FixMessage, tag: int) -> str:
    """Return a field that must be present; ``ProtocolError`` naming it otherwise."""
    value = text(msg, tag)
    if value is None or value == "":
        raise ProtocolError(f"35={text(msg, Tag.MsgType)} lacks required tag {tag}")
    return value


def utc_ms(value: Optional[str]) -> int:
    """Parse a FIX UTCTimestamp (``YYYYMMDD-HH:MM:SS[.sss]``) into epoch ms; now if absent."""
    if not value:
        return int(time.time() * 1000)
    try:
        main, _, frac = value.partition(".")
        seconds = calendar.timegm(time.strptime(main, "%Y%m%d-%H:%M:%S"))
        millis = int((frac + "000")[:3]) if frac else 0
        return seconds * 1000 + millis
    except ValueError:
        raise ProtocolError(f"bad UTCTimestamp {value[:30]!r}") from None


def fmt_qty(value: float) -> str:
    """Format a quantity or price without float noise (``10``, ``4500.25``)."""
    return f"{value:.10f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------- orders out
def new_order_single(order: BaseOrder, cl_ord_id: str, symbol: str, account: str) -> list[tuple]:
    """Return the body of a NewOrderSingle (35=D) for ``order``."""
    if order.order_type not in ORD_TYPE:
        raise InvalidOrder(f"order {order.client_order_id}: order type {order.order_type!r} "
                           "is not offered over FIX")
    fields = [(Tag.ClOrdID, cl_ord_id), (Tag.Account, account), (Tag.Symbol, symbol),
              (Tag.Side, SIDE_BUY if order.qty > 0 else SIDE_SELL),
              (Tag.TransactTime, None), (Tag.OrderQty, fmt_qty(abs(order.qty))),
              (Tag.OrdType, ORD_TYPE[order.order_type]),
              (Tag.TimeInForce, TIME_IN_FORCE[order.time_in_force])]
    fields += price_fields(order.order_type, order.price)
    return fields


def price_fields(order_type: str, price: Optional[float]) -> list[tuple]:
    """Return Price (44) for a limit order or StopPx (99) for a stop order."""
    if order_type == OrderType.LIMIT:
        return [(Tag.Price, fmt_qty(price))]
    if order_type == OrderType.STOP:
        return [(Tag.StopPx, fmt_qty(price))]
    return []


def cancel_request(order: BaseOrder, cl_ord_id: str, orig_cl_ord_id: str, symbol: str,
                   account: str) -> list[tuple]:
    """Return the body of an OrderCancelRequest (35=F)."""
    return [(Tag.OrigClOrdID, orig_cl_ord_id), (Tag.ClOrdID, cl_ord_id), (Tag.Account, account),
            (Tag.Symbol, symbol), (Tag.Side, SIDE_BUY if order.qty > 0 else SIDE_SELL),
            (Tag.TransactTime, None), (Tag.OrderQty, fmt_qty(abs(order.qty)))]


def replace_request(order: BaseOrder, cl_ord_id: str, orig_cl_ord_id: str, symbol: str,
                    account: str, price: float) -> list[tuple]:
    """Return the body of an OrderCancelReplaceRequest (35=G) moving the order's price."""
    fields = [(Tag.OrigClOrdID, orig_cl_ord_id), (Tag.ClOrdID, cl_ord_id), (Tag.Account, account),
              (Tag.Symbol, symbol), (Tag.Side, SIDE_BUY if order.qty > 0 else SIDE_SELL),
              (Tag.TransactTime, None), (Tag.OrderQty, fmt_qty(abs(order.qty))),
              (Tag.OrdType, ORD_TYPE[order.order_type]),
              (Tag.TimeInForce, TIME_IN_FORCE[order.time_in_force])]
    return fields + price_fields(order.order_type, price)


def status_request(order: BaseOrder, cl_ord_id: str, symbol: str) -> list[tuple]:
    """Return the body of an OrderStatusRequest (35=H)."""
    fields = [(Tag.ClOrdID, cl_ord_id), (Tag.Symbol, symbol),
              (Tag.Side, SIDE_BUY if order.qty > 0 else SIDE_SELL)]
    if order.broker_ref:
        fields.insert(0, (Tag.OrderID, order.broker_ref))
    return fields


def market_data_request(req_id: str, symbol: str, subscribe: bool) -> list[tuple]:
    """Return the body of a MarketDataRequest (35=V) for trades, bids and offers."""
    fields = [(Tag.MDReqID, req_id), (Tag.SubscriptionRequestType, "1" if subscribe else "2"),
              (Tag.MarketDepth, "1"), (Tag.MDUpdateType, "1"),
              (Tag.NoMDEntryTypes, str(len(MD_PRICE_TYPES)))]
    fields += [(Tag.MDEntryType, t) for t in MD_PRICE_TYPES]
    return fields + [(Tag.NoRelatedSym, "1"), (Tag.Symbol, symbol)]


def request_for_positions(req_id: str, account: str) -> list[tuple]:
    """Return the body of a RequestForPositions (35=AN) for today's positions of ``account``."""
    return [(Tag.PosReqID, req_id), (Tag.PosReqType, "0"), (Tag.Account, account),
            (Tag.AccountType, "1"), (Tag.ClearingBusinessDate, time.strftime("%Y%m%d", time.gmtime())),
            (Tag.TransactTime, None)]


def position_report(msg: simplefix.FixMessage) -> tuple[str, float]:
    """Return ``(symbol, signed net quantity)`` of a PositionReport (35=AP)."""
    symbol = required(msg, Tag.Symbol)
    longs = sum(float(v) for t, v in msg.pairs if int(t) == Tag.LongQty)
    shorts = sum(float(v) for t, v in msg.pairs if int(t) == Tag.ShortQty)
    return symbol, longs - shorts


# ---------------------------------------------------------------------------- reports in
@dataclass
class ExecReport:
    """The fields of an ExecutionReport (35=8) this broker acts on."""

    cl_ord_id: str
    orig_cl_ord_id: Optional[str]
    order_id: str
    exec_id: str
    exec_type: str
    ord_status: str
    symbol: Optional[str]
    last_qty: float
    last_px: float
    cum_qty: float
    avg_px: float
    commission: float
    transact_time: int
    text: str
    ord_rej_reason: Optional[str]

    @property
    def kind(self) -> str:
        """What the report means: ``new``, ``trade``, ``canceled``, ... (see EXEC_TYPE)."""
        return EXEC_TYPE.get(self.exec_type, f"exec_type_{self.exec_type}")

    @property
    def status(self) -> Optional[str]:
        """The MAOTrade status OrdStatus maps to (None: leave the state as it is)."""
        return ORD_STATUS.get(self.ord_status)


def parse_execution_report(msg: simplefix.FixMessage) -> ExecReport:
    """Parse an ExecutionReport; ``ProtocolError`` naming the first bad or missing tag."""
    exec_type = required(msg, Tag.ExecType)
    ord_status = required(msg, Tag.OrdStatus)
    if exec_type not in EXEC_TYPE:
        raise ProtocolError(f"ExecutionReport has unknown ExecType {exec_type!r}")
    if ord_status not in ORD_STATUS:
        raise ProtocolError(f"ExecutionReport has unknown OrdStatus {ord_status!r}")
    report = ExecReport(
        cl_ord_id=text(msg, Tag.ClOrdID) or "", orig_cl_ord_id=text(msg, Tag.OrigClOrdID),
        order_id=required(msg, Tag.OrderID), exec_id=required(msg, Tag.ExecID),
        exec_type=exec_type, ord_status=ord_status, symbol=text(msg, Tag.Symbol),
        last_qty=number(msg, Tag.LastQty, 0.0), last_px=number(msg, Tag.LastPx, 0.0),
        cum_qty=number(msg, Tag.CumQty, 0.0), avg_px=number(msg, Tag.AvgPx, 0.0),
        commission=number(msg, Tag.Commission, 0.0), transact_time=utc_ms(text(msg, Tag.TransactTime)),
        text=text(msg, Tag.Text) or "", ord_rej_reason=text(msg, Tag.OrdRejReason))
    if report.kind == "trade" and not (report.last_qty > 0 and report.last_px > 0):
        raise ProtocolError(f"trade report {report.exec_id} lacks a positive LastQty/LastPx")
    return report


def md_entries(msg: simplefix.FixMessage) -> list[dict]:
    """Split the NoMDEntries group of a 35=W or 35=X into dicts of ``{tag: str}``.

    A new entry starts at the group's first tag: MDUpdateAction (279) in an
    incremental refresh, MDEntryType (269) in a snapshot.
    """
    first = Tag.MDUpdateAction if text(msg, Tag.MsgType) == MsgType.MARKET_DATA_INCREMENTAL \
        else Tag.MDEntryType
    entries: list[dict] = []
    inside = False
    for tag, value in msg.pairs:
        tag = int(tag)
        if tag == Tag.NoMDEntries:
            inside = True
            continue
        if not inside:
            continue
        if tag == first:
            entries.append({})
        if entries:
            entries[-1][tag] = value.decode("utf-8", "replace")
    return entries


def md_price(entries: list[dict]) -> Optional[float]:
    """Return the price a bar should use: the last trade, else the bid/offer mid."""
    by_type: dict[str, float] = {}
    for entry in entries:
        kind, px = entry.get(Tag.MDEntryType), entry.get(Tag.MDEntryPx)
        if kind in MD_PRICE_TYPES and px is not None and entry.get(Tag.MDUpdateAction, "0") != "2":
            try:
                by_type[kind] = float(px)
            except ValueError:
                raise ProtocolError(f"MDEntryPx is not a number: {px[:20]!r}") from None
    if "2" in by_type:
        return by_type["2"]
    if "0" in by_type and "1" in by_type:
        return (by_type["0"] + by_type["1"]) / 2
    return None
