"""Message type names, for the engine code that still handles messages as maps.

The messages themselves, their fields and the codec are ``maotrade.protocol`` (typed
structs, one module per direction); new code builds structs and never needs these
names. Each name here is the tag of one struct there, and a test holds them equal
(tests/unit/test_protocol.py).
"""
from __future__ import annotations

from typing import Any, Iterable

import msgspec

from maotrade.errors import ProtocolError
from maotrade.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION, encode

__all__ = ["MAX_FRAME_BYTES", "PROTOCOL_VERSION", "ClientToEngine", "ConnectionState", "EngineToClient",
           "EngineToWorker", "WorkerToEngine", "message", "pack_batch", "unpack_batch"]


class EngineToWorker:
    """Messages the engine sends on an account's in_queue."""

    ACCOUNT_INFO_REQUEST = "account_info_request"
    PORTFOLIO_REQUEST = "portfolio_request"
    MARKET_DATA_REQUEST = "market_data_request"
    ORDER_OPEN = "order_open"
    ORDER_CLOSE = "order_close"
    ORDER_STOP = "order_stop"
    ORDER_CANCEL = "order_cancel"
    ORDER_STATUS_REQUEST = "order_status_request"
    SHUTDOWN = "shutdown"
    MARKET_DATA_HOLD = "market_data_hold"  # pause / resume a stream a slow client cannot keep up with
    REPLAY_ADVANCE = "replay_advance"  # a replaying broker may send its next bar
    HISTORY_REQUEST = "history_request"  # historical bars of one instrument and time frame


class WorkerToEngine:
    """Messages an Account Manager sends on its out_queue."""

    INIT_RESULT = "init_result"
    ACCOUNT_INFO = "account_info"
    PORTFOLIO = "portfolio"
    ORDER_EVENT = "order_event"  # what the broker said of one order (``maotrade.order.OrderEvent``)
    MARKET_DATA = "market_data"
    MARKET_DATA_BLOCK = "market_data_block"  # consecutive bars of one stream (``maotrade.protocol.bar_block``)
    MARKET_DATA_RESPONSE = "market_data_response"
    CONNECTION = "connection"
    ACCOUNT_DISCONNECTED = "account_disconnected"
    HEARTBEAT = "heartbeat"
    ERROR = "error"
    SHUTDOWN_ACK = "shutdown_ack"
    HISTORY_DATA = "history_data"  # bars answering a history_request, in one or more parts


class ClientToEngine:
    """Messages a strategy (or any client) sends to the engine's ROUTER socket."""

    HELLO = "hello"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    ORDER_OPEN = "order_open"
    ORDER_CLOSE = "order_close"
    ORDER_STOP = "order_stop"
    ORDER_CANCEL = "order_cancel"
    ACCOUNT_INFO_REQUEST = "account_info_request"
    PORTFOLIO_REQUEST = "portfolio_request"
    STATUS_REQUEST = "status_request"
    STOP_ENGINE = "stop_engine"
    RECONCILE_REQUEST = "reconcile_request"
    RECONCILE_ACTION = "reconcile_action"
    BYE = "bye"
    BAR_ACK = "bar_ack"  # a replayed bar (``replay_seq``) was handled
    CANCEL_ALL = "cancel_all"  # cancel every working order (of one account, or all)
    FLATTEN = "flatten"  # cancel_all, then close every position at market
    BALANCE_HISTORY_REQUEST = "balance_history_request"
    HISTORY_REQUEST = "history_request"  # historical bars through an account's broker
    # Operator requests (served by ``engine.ops``).
    RISK_STATUS = "risk_status"
    RISK_SET = "risk_set"
    KILL_SWITCH = "kill_switch"
    ORDERS_REQUEST = "orders_request"
    ORDER_REFRESH = "order_refresh"
    ACCOUNT_REQUEST = "account_request"


class EngineToClient:
    """Messages the engine sends to a client over ROUTER (and publishes on PUB)."""

    WELCOME = "welcome"
    MARKET_DATA = "market_data"
    MARKET_DATA_BLOCK = "market_data_block"  # forwarded as the worker packed it
    ORDER = "order"
    ACCOUNT_INFO = "account_info"
    PORTFOLIO = "portfolio"
    ACCOUNT_STATUS = "account_status"
    STATUS = "status"
    ERROR = "error"
    SUBSCRIBED = "subscribed"
    STOPPING = "stopping"
    STALE_DATA = "stale_data"
    DISCREPANCY = "discrepancy"
    RECONCILE = "reconcile"
    RECONCILED = "reconciled"
    OPERATOR_ACTION = "operator_action"  # what cancel_all / flatten did (also published)
    BALANCE_HISTORY = "balance_history"
    HISTORY_DATA = "history_data"  # one part of the answer to a client's history_request
    # Answers to operator requests.
    RISK = "risk"
    ORDERS = "orders"
    ACCOUNT = "account"
    # Events published for operators and observers.
    KILL_SWITCH = "kill_switch"
    WORKER_ERROR = "worker_error"


class ConnectionState:
    """Connection states an Account Manager reports."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


def message(msg_type: str, **fields: Any) -> dict:
    """Return a message map with its type and schema version set."""
    fields["type"] = msg_type
    fields["v"] = PROTOCOL_VERSION
    return fields


_decoder = msgspec.msgpack.Decoder()


def pack_batch(messages: Iterable) -> bytes:
    """Encode messages (structs or maps) as one frame (a msgpack array of maps)."""
    return encode(messages)


def unpack_batch(frame: bytes) -> list[dict]:
    """Decode one frame into maps without knowing its direction (observers, tools).

    Raise ``ProtocolError`` on anything malformed: a frame is refused whole when it is not
    an array of maps that each carry a string ``type``. Receivers that know their
    direction decode with its ``maotrade.protocol`` channel instead, which also checks
    every field.
    """
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        batch = _decoder.decode(frame)
    except RecursionError:
        # msgspec recurses per nesting level; a peer must never be able to turn that
        # into an exception the engine does not expect.
        raise ProtocolError("undecodable frame (nested too deep)") from None
    except (msgspec.DecodeError, ValueError, TypeError, MemoryError, OverflowError) as exc:
        raise ProtocolError(f"undecodable frame ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(batch, dict):
        batch = [batch]
    if not isinstance(batch, list):
        raise ProtocolError(f"frame is a {type(batch).__name__}, not an array of messages")
    for item in batch:
        if type(item) is not dict or type(item.get("type")) is not str:
            if not isinstance(item, dict):
                raise ProtocolError(f"message is a {type(item).__name__}, not a map")
            raise ProtocolError("message has no string 'type'")
    return batch

