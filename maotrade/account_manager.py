"""``BaseAccountManager``: the one class every broker extends.

The engine runs each account's Account Manager in its own process. The base class owns
that process's loop, its two queues, its connection state, reconnect backoff, order
timeouts and heartbeats; a subclass writes only broker logic.

Contract for broker authors
===========================

Required methods (abstract; names exactly so):

=====================================  ==================================================
``on_account_manager_init()``          Called once at start and again on every reconnect
                                       attempt. Connect and log in; return
                                       ``(ok, account_info, portfolio_info, order_template,
                                       history_frames, data_frames)``. May block (it runs
                                       before the loop serves requests). Raise
                                       ``TemporaryError`` (or return ``ok=False``) to be
                                       retried with backoff, ``OperationalError`` (bad
                                       credentials) to stop for good.
``account_manager_main(time_now)``     Called on every loop turn, at least every
                                       ``tick_interval`` seconds, with epoch milliseconds.
                                       Poll, expire, stream. Must return quickly.
``do_async_request_account_info()``    Start fetching balances; answer later with
                                       ``send_account_info``.
``do_async_request_portfolio()``       Start fetching positions and working orders; answer
                                       with ``send_portfolio``.
``do_async_request_market_data(req)``  Subscribe or unsubscribe (``req["action"]``);
                                       return True if the request was taken. Bars then
                                       flow through ``send_realtime_data``.
``do_async_request_order_open(order)`` Send a new order; answer every state change with
                                       ``send_request_order_response``.
``do_async_request_order_close(o)``    Reduce or close the position in ``o.epic`` by
                                       ``o.qty`` (signed: a sell closes a long).
``do_async_request_stop_order(o)``     Amend stop loss / take profit of the position or
                                       working order ``o.client_order_id`` refers to.
=====================================  ==================================================

Optional methods (the defaults refuse clearly):

=======================================  ================================================
``do_async_request_order_cancel(o)``     Cancel a working order. Default: REJECTED
                                         "cancel not supported".
``do_async_request_order_status(o)``     Ask the broker about an order whose outcome is
                                         unknown, by client order id; answer with
                                         ``send_order_status`` (state and all fills) or
                                         ``send_order_not_found``. Default: reported
                                         unknown (never assumed not found).
``do_async_request_history(req)``        Fetch completed bars of ``req["epicBroker"]`` at
                                         ``req["time_frame"]`` seconds dated in
                                         ``[req["start"], req["end"])`` (epoch ms); answer
                                         with ``send_history`` one or more times, the last
                                         with ``done=True``, or ``send_history_error``.
                                         Default: refused, "history not supported".
``do_reconnect()``                       Re-establish the session; default re-runs
                                         ``on_account_manager_init``.
``on_account_manager_shutdown()``        Log out, close sockets.
=======================================  ================================================

Rules: ``do_async_*`` never block. Blocking client calls go through ``run_blocking``,
whose callbacks run back on the loop thread; other library threads hand work to the
loop with ``call_soon_threadsafe``. Only the loop thread touches the queues. Every
order request gets an answer: if the broker stays silent for ``order_timeout``
seconds the base class asks ``do_async_request_order_status`` once, then reports the
outcome unknown to the engine, which never resends it. A broken connection is reported
with ``connection_lost(reason)``; the base class refuses orders while disconnected and
reconnects with backoff ``min(reconnect_max, reconnect_base * 2**attempt)``, sending
``account_disconnected`` when ``max_retries`` attempts have failed.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, Union

import msgspec
import zmq

from maotrade.config import AccountSettings, BrokerSettings, parse_settings
from maotrade.errors import (InvalidOrder, MAOTradeError, OperationalError, ProtocolError,
                             RequestNotSent, TemporaryError)
from maotrade.log import redact_text, register_secret
from maotrade.messages import ConnectionState
from maotrade.order import STATUS_EVENT, BaseOrder, BrokerOrder, Fill, OrderEvent, OrderStatus, fill_data
from maotrade.protocol import FillData, Message, OrderData, Refusal, from_worker as out, to_worker as into
from maotrade.protocol.bar_block import MAX_BLOCK_BARS, pack_rows
from maotrade.queues import MessageQueue
from maotrade.secrets import secret_values

log = logging.getLogger(__name__)

InitResult = tuple  # (ok, account_info, portfolio_info, order_template, history_frames, data_frames)

# Exit codes of a worker process, read by the engine's supervisor.
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_FATAL = 3  # an OperationalError: restarting will not help

# accountConfig keys that belong to the engine (risk limits, webhook auth), never to the broker.
ENGINE_KEYS = frozenset({"risk", "webhook_secret", "webhook_allowed_ips"})

ORDER_REQUESTS = {into.OrderOpen.TYPE, into.OrderClose.TYPE, into.OrderStop.TYPE, into.OrderCancel.TYPE}
# The requests that create an order at the broker: refused, the order itself is REJECTED.
CREATING_REQUESTS = (into.OrderOpen.TYPE, into.OrderClose.TYPE)
# A history request whose broker sends no part for this long is answered with an error.
HISTORY_SILENCE_S = 120.0
# Bars per history_data part: large downloads travel as many frames of bounded size.
HISTORY_PART_BARS = 5000


def check_history_request(request: dict) -> dict:
    """Return a history request with its fields checked; ``ProtocolError`` names the bad one."""
    out = dict(request)
    for name in ("epic", "epicBroker"):
        if not isinstance(out.get(name), str) or not out[name]:
            raise ProtocolError(f"history request needs a non-empty string {name!r}")
    for name, low in (("time_frame", 1), ("start", 0), ("end", 1)):
        value = out.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ProtocolError(f"history request needs an integer {name!r} >= {low}, got {value!r}")
    if out["end"] <= out["start"]:
        raise ProtocolError(f"history request ends ({out['end']}) before it starts ({out['start']})")
    return out


def now_ms() -> int:
    """Return the current time in epoch milliseconds."""
    return int(time.time() * 1000)


class _PendingOrder:
    __slots__ = ("order", "kind", "deadline", "queried")

    def __init__(self, order: BaseOrder, kind: str, deadline: float):
        self.order, self.kind, self.deadline, self.queried = order, kind, deadline, False


class BaseAccountManager(abc.ABC):
    """Base class of every Account Manager; see the module docstring for the contract."""

    #: pydantic models of this broker's ``brokerConfig`` and ``accountConfig``.
    settings_model: type[BrokerSettings] = BrokerSettings
    account_settings_model: Optional[type[AccountSettings]] = None
    #: what this broker supports, asked by the engine before it tries.
    CAPABILITIES: dict = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": False,
                          "stop_amend": True, "partial_close": True, "market_data": True}

    def __init__(self, config: dict, in_queue: MessageQueue, out_queue: MessageQueue):
        self.config = config
        self.account_id = str(config["idAccount"])
        self.broker_name = config.get("brokerName", "")
        self.settings = parse_settings(self.settings_model, config.get("brokerConfig") or {},
                                       f"account {self.account_id} brokerConfig")
        account_config = {k: v for k, v in (config.get("accountConfig") or {}).items()
                          if k not in ENGINE_KEYS}
        self.account_settings = (parse_settings(self.account_settings_model, account_config,
                                                f"account {self.account_id} accountConfig")
                                 if self.account_settings_model else None)
        self.runtime: dict = config.get("runtime") or {}
        for value in secret_values(config.get("accountConfig") or {}):
            register_secret(value)
        self.epic_mapping: dict[str, str] = dict(config.get("epicMapping") or {})
        self.epic_from_broker: dict[str, str] = {v: k for k, v in self.epic_mapping.items()}
        self.in_queue = in_queue
        self.out_queue = out_queue
        self.connection_state = ConnectionState.CONNECTING
        self.orders: dict[str, BaseOrder] = {}
        self._reconnect_attempt = 0
        self._init_failure = ""  # why the last session attempt failed, for status
        self._next_reconnect_at: Optional[float] = None
        self._pending: dict[str, _PendingOrder] = {}
        self._seen_open: set[str] = set()
        self._from_engine: set[str] = set()  # client order ids the engine has sent us
        self._sent_exec_ids: set[str] = set()
        self._running = False
        self._market_data_held = False
        self._last_heartbeat = 0.0
        self._executor: Optional[ThreadPoolExecutor] = None
        self._session_generation = 0
        self._handoff: deque = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._watched: dict[int, Callable[[], None]] = {}
        self._order_handlers: dict[str, Callable[[BaseOrder], None]] = {
            into.OrderOpen.TYPE: self.do_async_request_order_open,
            into.OrderClose.TYPE: self.do_async_request_order_close,
            into.OrderStop.TYPE: self.do_async_request_stop_order,
            into.OrderCancel.TYPE: self.do_async_request_order_cancel,
            into.OrderStatusRequest.TYPE: self.do_async_request_order_status,
        }
        self._busy = False
        self._poller: Optional[zmq.Poller] = None
        self._polled_fds: set = set()
        self._history_deadlines: dict[str, float] = {}

    # ------------------------------------------------------------------ abstract
    @abc.abstractmethod
    def on_account_manager_init(self) -> InitResult:
        """Connect and log in; return (ok, account_info, portfolio_info, order_template,
        history_frames, data_frames)."""

    @abc.abstractmethod
    def account_manager_main(self, time_now: int) -> None:
        """Do periodic broker work; called every loop turn with epoch milliseconds."""

    @abc.abstractmethod
    def do_async_request_account_info(self) -> None:
        """Start fetching account info; answer with ``send_account_info``."""

    @abc.abstractmethod
    def do_async_request_portfolio(self) -> None:
        """Start fetching positions and working orders; answer with ``send_portfolio``."""

    @abc.abstractmethod
    def do_async_request_market_data(self, request: dict) -> bool:
        """Subscribe/unsubscribe market data; return True if the request was taken."""

    @abc.abstractmethod
    def do_async_request_order_open(self, order: BaseOrder) -> None:
        """Send a new order to the broker; answer through ``send_request_order_response``."""

    @abc.abstractmethod
    def do_async_request_order_close(self, order: BaseOrder) -> None:
        """Reduce or close the position in ``order.epic`` by ``order.qty``."""

    @abc.abstractmethod
    def do_async_request_stop_order(self, order: BaseOrder) -> None:
        """Amend stop loss / take profit of the order or position ``order`` refers to."""

    # ------------------------------------------------------------------ optional
    def do_async_request_order_cancel(self, order: BaseOrder) -> None:
        """Cancel a working order. Default: refuse, this broker cannot cancel."""
        self.send_order_refused(order, f"cancel is not supported by broker {self.broker_name}",
                                kind=into.OrderCancel.TYPE)

    def do_async_request_order_status(self, order: BaseOrder) -> None:
        """Ask the broker for an order by client order id. Default: report it unknown."""
        self.send_order_unknown(order, f"broker {self.broker_name} cannot be asked for order status")

    def do_async_request_history(self, request: dict) -> None:
        """Fetch historical bars (see the module docstring). Default: refuse, no history here."""
        self.send_history_error(request["request_id"],
                                f"history not supported by broker {self.broker_name or type(self).__name__}")

    def do_reconnect(self) -> bool:
        """Re-establish the broker session; return True when connected again."""
        return self._run_init()

    def on_account_manager_shutdown(self) -> None:
        """Log out and release broker resources; called once before the process exits."""

    def before_send(self) -> None:
        """Called before the messages a loop turn queued are sent (once per turn).

        A broker that keeps its own record writes what the turn changed here, in one
        commit, so that nothing is reported before it is recorded. An exception stops the
        worker unsent (the engine restarts it and asks). Default: nothing.
        """

    def longest_wait(self) -> float:
        """Seconds the loop may sleep when nothing arrives: ``tick_interval`` by default.

        A broker that knows when it next has work (the paper broker's next price step) may
        return more; the loop still never waits past the next heartbeat, and waits at most
        ``tick_interval`` while orders are pending, a history request runs or a reconnect
        is due.
        """
        return self.settings.tick_interval

    def handle_message(self, msg: Message) -> bool:
        """Handle an engine message the base class does not handle itself (such as the
        paper broker's ``to_worker.ReplayAdvance``); return True if it was handled."""
        return False

    # ------------------------------------------------------------------ send_* helpers
    def send_account_info(self, info: dict) -> None:
        """Send normalized account info (see docs/PROTOCOL.md ``account_info``)."""
        self.out_queue.put(out.AccountInfo(account=self.account_id, info=info))

    def send_portfolio(self, portfolio: dict) -> None:
        """Send normalized positions and working orders (``{"positions": [], "orders": []}``)."""
        self.out_queue.put(out.Portfolio(account=self.account_id, portfolio=portfolio))

    def send_request_order_response(self, order: BaseOrder, fill: Optional[Fill] = None,
                                    kind: str = "") -> None:
        """Report what the broker said of ``order`` (and optionally one new fill).

        The order's status is turned into one ``order_event`` for the engine (the engine's
        copy is the one that counts). A fill not yet applied to ``order`` is applied here;
        a fill whose ``exec_id`` was sent before (a broker resending itself) is not sent
        again: this and the engine journal's key are the only two duplicate checks.
        """
        wire_fill = None
        if fill is not None:
            if fill.exec_id in self._sent_exec_ids:
                log.info("event=duplicate_fill account=%s order=%s exec_id=%s",
                         self.account_id, order.client_order_id, fill.exec_id)
                return
            if not any(f["exec_id"] == fill.exec_id for f in order.fills):
                order.add_fill(fill)
            self._sent_exec_ids.add(fill.exec_id)
            wire_fill = fill.to_wire()
        pending = self._pending.get(order.client_order_id)
        if pending and (order.status != OrderStatus.NEW or kind):
            del self._pending[order.client_order_id]
        if wire_fill is not None:
            event = OrderEvent.FILLED
        elif kind == into.OrderStop.TYPE:
            event = OrderEvent.AMENDED
        else:
            event = STATUS_EVENT[order.status]
        self._send_event(order, event, fill=wire_fill, request=kind or None)

    def send_order_status(self, order: BaseOrder) -> None:
        """Answer a status request with the order's full state and every fill it has.

        The engine applies the fills it has not journaled (by ``exec_id``) and ignores the rest.
        """
        self._pending.pop(order.client_order_id, None)
        self._send_event(order, OrderEvent.STATUS, fills=[fill_data(f) for f in order.fills],
                         request=into.OrderStatusRequest.TYPE)

    def send_order_refused(self, order: BaseOrder, reason: str, kind: str = into.OrderOpen.TYPE) -> None:
        """Answer an order request that was refused before reaching the broker.

        For a new order or a close (``kind`` open or close) the order itself becomes
        REJECTED; for a cancel or amend only the request fails and the order keeps its state.
        """
        self._pending.pop(order.client_order_id, None)
        if kind in CREATING_REQUESTS:
            order.set_rejected(reason)
        self._send_event(order, OrderEvent.REFUSED, request=kind, reason=reason)

    def send_order_unknown(self, order: BaseOrder, reason: str) -> None:
        """Tell the engine this order's outcome cannot be determined now (never resend it)."""
        self._pending.pop(order.client_order_id, None)
        self._send_event(order, OrderEvent.UNKNOWN, request=into.OrderStatusRequest.TYPE, reason=reason)

    def send_order_not_found(self, order: BaseOrder) -> None:
        """Answer a status request: the broker has no order with this client order id.

        The engine may then place it (a bracket leg it owns): the broker has no such id, so
        that is not a repeat."""
        self._pending.pop(order.client_order_id, None)
        self._seen_open.discard(order.client_order_id)
        self._send_event(order, OrderEvent.NOT_FOUND, request=into.OrderStatusRequest.TYPE)

    def _send_event(self, order: BaseOrder, event: str, fill: Optional[FillData] = None,
                    fills: Optional[list] = None, request: Optional[str] = None, reason: str = "") -> None:
        # An order the engine did not send (a broker-side order found in a status answer,
        # say) travels with its description so the engine can journal it.
        described = order.client_order_id not in self._from_engine
        self.out_queue.put(out.OrderEvent(
            account=self.account_id, client_order_id=order.client_order_id, event=event, status=order.status,
            broker_ref=str(order.broker_ref) if order.broker_ref else None,
            reason=redact_text(reason or order.reason) or None, fill=fill, fills=fills, request=request,
            stop_loss=order.stop_loss, take_profit=order.take_profit, price=order.price,
            filled_qty=float(order.filled_qty or 0.0), avg_fill_price=float(order.avg_fill_price or 0.0),
            order=order.to_wire() if described else None))

    def send_realtime_data(self, data: dict) -> None:
        """Send one normalized bar: ``{epic, time_frame, date, open, high, low, close,
        volume, completed}`` (``date`` in epoch ms of the bar's start; ``replay_seq`` on a
        replayed bar). The caller's dict is not changed.

        Consecutive bars of one stream sent in one loop turn leave as one
        ``market_data_block``; a replayed bar leaves alone (the engine paces replay per bar).
        """
        if data.get("replay_seq") is not None:
            self.out_queue.put(out.MarketData(
                account=self.account_id, epic=data["epic"], time_frame=data["time_frame"], date=data["date"],
                open=data["open"], high=data["high"], low=data["low"], close=data["close"],
                volume=data.get("volume", 0.0), completed=data.get("completed", False),
                replay_seq=data["replay_seq"]))
            return
        self.out_queue.put_run(
            (data["epic"], data["time_frame"], bool(data.get("completed", False))),
            (data["date"], data["open"], data["high"], data["low"], data["close"], data.get("volume", 0.0)),
            self._pack_block, MAX_BLOCK_BARS)

    def send_realtime_bars(self, epic: str, time_frame: int, rows: list, completed: bool = True) -> None:
        """Send many bars of one stream at once (a source that has them in hand: a catch-up,
        a generator): ``rows`` of ``(date, open, high, low, close, volume)`` in date order.
        The cheapest way in; the engine sees the same bars as from ``send_realtime_data``."""
        for start in range(0, len(rows), MAX_BLOCK_BARS):
            self.out_queue.put(self._pack_block((epic, time_frame, completed), rows[start:start + MAX_BLOCK_BARS]))

    def _pack_block(self, key: tuple, rows: list) -> out.MarketDataBlock:
        epic, time_frame, completed = key
        return out.MarketDataBlock(account=self.account_id, epic=epic, time_frame=time_frame, completed=completed,
                                   bars=pack_rows(rows))

    @property
    def market_data_held(self) -> bool:
        """True while the engine asks this worker to pause its bars (a client cannot keep
        up). A source that can wait (a replay, a generator) sends nothing meanwhile; a live
        broker's bars keep coming and the engine conflates them."""
        return self._market_data_held

    def send_history(self, request_id: str, bars: list[dict], done: bool, start: Optional[int] = None,
                     end: Optional[int] = None, allowance: Optional[dict] = None) -> None:
        """Send one part of the answer to a history request.

        ``bars`` are normalized completed bars in date order. ``start``/``end`` (epoch ms)
        is the span this part covers completely: every bar the broker has in it is in
        ``bars`` (an empty span, such as a weekend, is covered too); it defaults to the
        dates of the first and last bar. ``allowance`` tells the operator how much of the
        broker's history quota is left (``{"remaining": n, "total": n, "reset_s": s}``).
        Parts larger than ``HISTORY_PART_BARS`` are split here.
        """
        if request_id not in self._history_deadlines:
            log.warning("event=history_part_unexpected account=%s request=%s", self.account_id, request_id)
            return
        if start is None:
            start = bars[0]["date"] if bars else None
        if end is None:
            end = bars[-1]["date"] + 1 if bars else None
        chunks = [bars[i:i + HISTORY_PART_BARS] for i in range(0, len(bars), HISTORY_PART_BARS)] or [[]]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            # Each part covers up to where the next one begins, so the parts tile [start, end).
            part_start = start if index == 0 else chunk[0]["date"]
            part_end = end if last else chunks[index + 1][0]["date"]
            self.out_queue.put(out.HistoryData(account=self.account_id, request_id=request_id, bars=chunk,
                                               start=part_start, end=part_end, done=done and last,
                                               allowance=allowance))
        if done:
            self._history_deadlines.pop(request_id, None)
        else:
            self._history_deadlines[request_id] = time.monotonic() + HISTORY_SILENCE_S

    def send_history_error(self, request_id: str, reason: str, allowance: Optional[dict] = None) -> None:
        """End a history request with a one-line reason (parts already sent stay valid)."""
        self._history_deadlines.pop(request_id, None)
        self.out_queue.put(out.HistoryData(account=self.account_id, request_id=request_id, bars=[], start=None,
                                           end=None, done=True, error=redact_text(reason), allowance=allowance))

    def send_account_disconnected(self, reason: str) -> None:
        """Tell the engine this account is disconnected for good (retries exhausted)."""
        self.out_queue.put(out.AccountDisconnected(account=self.account_id, reason=redact_text(reason)))

    def send_error(self, reason: str, request: Union[Message, dict, str, None] = None) -> None:
        """Report a failed non-order request in one line (``request``: the message, or its type)."""
        if isinstance(request, Message):
            request = request.TYPE
        elif isinstance(request, dict):
            request = request.get("type")
        self.out_queue.put(out.Error(account=self.account_id, reason=redact_text(reason),
                                     request=request if isinstance(request, str) else None))

    def to_maotrade_epic(self, epic_broker: str) -> str:
        """Return the MAOTrade epic for a broker code (the code itself if unmapped)."""
        return self.epic_from_broker.get(epic_broker, epic_broker)

    # ------------------------------------------------------------------ connection state
    @property
    def is_connected(self) -> bool:
        """True while the broker session is up and orders may be sent."""
        return self.connection_state == ConnectionState.CONNECTED

    def connection_lost(self, reason: str) -> None:
        """Report that the broker connection dropped; the base class reconnects with backoff."""
        if self.connection_state == ConnectionState.DISCONNECTED or self._next_reconnect_at is not None:
            return
        log.warning("event=connection_lost account=%s reason=%s", self.account_id, reason)
        if self.connection_state != ConnectionState.RECONNECTING:
            self._set_state(ConnectionState.RECONNECTING, reason)
        self._schedule_reconnect()

    def connection_suspended(self, reason: str) -> None:
        """Report that the session is up but the broker cannot trade now (no reconnect needed).

        Orders are refused until ``connection_resumed``; the engine shows the account as
        reconnecting.
        """
        if self.is_connected:
            self._set_state(ConnectionState.RECONNECTING, reason)

    def connection_resumed(self, reason: str = "") -> None:
        """Report that trading is possible again after ``connection_suspended``.

        Call it once the broker's state is caught up: the engine then re-synchronises the
        account (info, portfolio, open orders) before routing new orders.
        """
        if self.connection_state == ConnectionState.RECONNECTING and self._next_reconnect_at is None:
            self._set_state(ConnectionState.CONNECTED, reason)

    def worker_heartbeat_interval(self) -> float:
        """Seconds between this worker's heartbeats to the engine.

        ``brokerConfig.heartbeat_interval`` by default; a broker whose protocol gives that
        key another meaning (FIX HeartBtInt) overrides this.
        """
        return self.settings.heartbeat_interval

    def reconnect_delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt ``attempt`` (0-based)."""
        return min(self.settings.reconnect_max, self.settings.reconnect_base * (2 ** attempt))

    def _schedule_reconnect(self) -> None:
        if self._reconnect_attempt >= self.settings.max_retries:
            reason = f"gave up after {self._reconnect_attempt} reconnect attempts"
            self._set_state(ConnectionState.DISCONNECTED, reason)
            self.send_account_disconnected(reason)
            self._next_reconnect_at = None
            return
        delay = self.reconnect_delay(self._reconnect_attempt)
        self._next_reconnect_at = time.monotonic() + delay
        log.info("event=reconnect_scheduled account=%s attempt=%d delay_s=%.1f",
                 self.account_id, self._reconnect_attempt + 1, delay)

    def _try_reconnect(self) -> None:
        self._next_reconnect_at = None
        self._reconnect_attempt += 1
        try:
            ok = self.do_reconnect()
        except OperationalError:
            raise
        except Exception as exc:  # a broker library may raise anything while reconnecting
            log.warning("event=reconnect_failed account=%s attempt=%d reason=%s",
                        self.account_id, self._reconnect_attempt, exc)
            ok = False
        if ok:
            self._reconnect_attempt = 0
        else:
            self._schedule_reconnect()

    def _set_state(self, state: str, reason: str = "") -> None:
        self.connection_state = state
        self.out_queue.put(out.Connection(account=self.account_id, state=state, reason=redact_text(reason),
                                          attempt=self._reconnect_attempt))

    def _run_init(self) -> bool:
        try:
            result = self.on_account_manager_init()
        except OperationalError:
            raise
        except (TemporaryError, OSError) as exc:
            log.warning("event=init_failed account=%s reason=%s", self.account_id, exc)
            self._init_failure = str(exc) or type(exc).__name__
            return False
        ok, account_info, portfolio, template, history_frames, data_frames = result
        if not ok:
            self._init_failure = "the broker refused the session"
            return False
        self.out_queue.put(out.InitResult(
            account=self.account_id, ok=True, account_info=account_info, portfolio=portfolio,
            order_template=template, history_frames=history_frames, data_frames=data_frames,
            capabilities=self.CAPABILITIES, pid=os.getpid()))
        self._set_state(ConnectionState.CONNECTED)
        return True

    # ------------------------------------------------------------------ threads
    def run_blocking(self, fn: Callable, *args: Any, on_result: Optional[Callable] = None,
                     on_error: Optional[Callable] = None,
                     executor: Optional[Callable[..., Future]] = None) -> None:
        """Run a blocking call off the loop; its callbacks run back on the loop.

        ``executor(fn, *args)`` returns a ``concurrent.futures.Future`` (a broker client's
        own thread or event loop, say ib_insync's); by default a small thread pool runs it.
        Without ``on_error`` a failure is logged.
        """
        if executor is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"am-{self.account_id}")
            executor = self._executor.submit

        def done(future):
            exc = future.exception()
            if exc is not None:
                if on_error:
                    self.call_soon_threadsafe(on_error, exc)
                else:
                    self.call_soon_threadsafe(self._log_background_error, fn, exc)
            elif on_result:
                self.call_soon_threadsafe(on_result, future.result())

        executor(fn, *args).add_done_callback(done)

    def new_session(self) -> Callable[[Callable], Callable]:
        """Begin a new broker session; return ``guard`` for the callbacks of its library.

        ``guard(fn)`` is safe to call from any thread: it runs ``fn(*args)`` on the loop,
        unless another session has begun since (a dead session's late words are dropped).
        """
        self._session_generation += 1
        generation = self._session_generation

        def guard(fn: Callable) -> Callable:
            def from_any_thread(*args: Any) -> None:
                self.call_soon_threadsafe(self._if_current_session, generation, fn, *args)
            return from_any_thread
        return guard

    def end_session(self) -> None:
        """Drop whatever the current session's library still delivers."""
        self._session_generation += 1

    def _if_current_session(self, generation: int, fn: Callable, *args: Any) -> None:
        if generation == self._session_generation:
            fn(*args)

    def call_soon_threadsafe(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread soon; safe from any thread."""
        self._handoff.append((fn, args))
        # A full pipe already holds wake-ups: the loop will wake regardless.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def watch_fd(self, fd: int, on_readable: Optional[Callable[[], None]]) -> None:
        """Call ``on_readable()`` on the loop whenever ``fd`` is readable (None stops)."""
        if on_readable is None:
            self._watched.pop(fd, None)
        else:
            self._watched[fd] = on_readable

    def wake_soon(self) -> None:
        """Run the next loop turn without waiting (call from the loop when work remains)."""
        self._busy = True

    def _log_background_error(self, fn: Callable, exc: BaseException) -> None:
        log.error("event=background_call_failed account=%s call=%s reason=%s",
                  self.account_id, getattr(fn, "__name__", fn), exc)

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Connect, then serve the queues until shut down; return the process exit code."""
        self._running = True
        self._set_state(ConnectionState.CONNECTING)
        self.out_queue.flush()
        try:
            if not self._run_init():
                self._set_state(ConnectionState.RECONNECTING,
                                f"initial connection failed: {self._init_failure}")
                self._schedule_reconnect()
            self._send_queued()
            while self._running:
                self._turn()
        except OperationalError as exc:
            log.error("event=fatal account=%s reason=%s", self.account_id, exc)
            self._set_state(ConnectionState.DISCONNECTED, str(exc))
            self.send_account_disconnected(str(exc))
            self._send_queued()
            self._close()
            return EXIT_FATAL
        self._shutdown()
        return EXIT_OK

    def _idle_wait_ms(self) -> int:
        tick = self.settings.tick_interval
        if self._pending or self._history_deadlines or self._next_reconnect_at is not None:
            return int(tick * 1000)
        until_heartbeat = self._last_heartbeat + self.worker_heartbeat_interval() - time.monotonic()
        return int(max(tick, min(self.longest_wait(), until_heartbeat)) * 1000)

    def _send_queued(self) -> None:
        """Let the broker record the turn, then send what it queued."""
        self.before_send()
        self.out_queue.flush()

    def _turn(self) -> None:
        timeout_ms = 0 if self._busy else self._idle_wait_ms()
        self._busy = False
        if self._poller is None or self._watched.keys() != self._polled_fds:
            self._poller = zmq.Poller()
            self._poller.register(self.in_queue.socket, zmq.POLLIN)
            self._poller.register(self._wake_r, zmq.POLLIN)
            for fd in self._watched:
                self._poller.register(fd, zmq.POLLIN)
            self._polled_fds = set(self._watched)
        ready = dict(self._poller.poll(timeout_ms))
        if self._wake_r in ready:
            # Empty the wake-up pipe; the reads end with BlockingIOError once it is empty.
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    continue
        while self._handoff:
            fn, args = self._handoff.popleft()
            self._guarded(fn, *args)
        for fd, callback in list(self._watched.items()):
            if fd in ready:
                self._guarded(callback)
        self._serve_requests()
        now = time.monotonic()
        if self._next_reconnect_at is not None and now >= self._next_reconnect_at:
            self._try_reconnect()
        if self.is_connected:
            self._guarded(self.account_manager_main, now_ms())
        self._check_order_timeouts(now)
        if self._history_deadlines:
            self._check_history_timeouts(now)
        if now - self._last_heartbeat >= self.worker_heartbeat_interval():
            self._last_heartbeat = now
            self.out_queue.put(out.Heartbeat(account=self.account_id, time=now_ms(), state=self.connection_state,
                                             pending=len(self._pending)))
        self._send_queued()

    def _guarded(self, fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except OperationalError:
            raise
        except MAOTradeError as exc:
            log.warning("event=callback_failed account=%s call=%s reason=%s",
                        self.account_id, getattr(fn, "__name__", fn), exc)
        except Exception:
            log.exception("event=callback_crashed account=%s call=%s", self.account_id,
                          getattr(fn, "__name__", fn))

    def _serve_requests(self) -> None:
        """Handle every engine message received; answer each one refused at decode with ``error``."""
        for msg in self.in_queue.drain():
            self._dispatch(msg)
            if not self._running:
                break
        for refusal in self.in_queue.take_refused():
            self._refused(refusal)

    def _refused(self, refusal: Refusal) -> None:
        log.warning("event=bad_request account=%s type=%s reason=%s", self.account_id, refusal.type,
                    refusal.reason)
        self.send_error(refusal.reason, refusal.type or None)

    def _dispatch(self, msg: Message) -> None:
        kind = msg.TYPE
        try:
            if isinstance(msg, into.Shutdown):
                self._running = False
            elif isinstance(msg, into.ORDER_REQUESTS):
                self._dispatch_order(kind, msg.order)
            elif isinstance(msg, into.HistoryRequest):
                self._dispatch_history(msg.request)
            elif isinstance(msg, into.MarketDataHold):
                self._market_data_held = msg.hold
                log.info("event=market_data_%s account=%s", "held" if msg.hold else "resumed", self.account_id)
            elif not self.is_connected:
                self.send_error(f"account {self.account_id} is {self.connection_state}", msg)
            elif isinstance(msg, into.AccountInfoRequest):
                self.do_async_request_account_info()
            elif isinstance(msg, into.PortfolioRequest):
                self.do_async_request_portfolio()
            elif isinstance(msg, into.MarketDataRequest):
                request = msgspec.structs.asdict(msg.request)
                if not request["epicBroker"]:
                    raise ProtocolError("market_data_request needs a non-empty epicBroker")
                ok = bool(self.do_async_request_market_data(request))
                self.out_queue.put(out.MarketDataResponse(account=self.account_id, request=request, ok=ok))
            elif not self.handle_message(msg):
                raise ProtocolError(f"message type {kind!r} is not handled by broker {self.broker_name}")
        except OperationalError:
            raise
        except (ProtocolError, InvalidOrder) as exc:
            log.warning("event=bad_request account=%s type=%s reason=%s", self.account_id, kind, exc)
            self.send_error(str(exc), msg)
        except Exception as exc:
            log.exception("event=request_crashed account=%s type=%s", self.account_id, kind)
            self.send_error(f"{type(exc).__name__}: {exc}", msg)

    def _dispatch_order(self, kind: str, wire: OrderData) -> None:
        order = BrokerOrder.from_wire(wire)
        if not order.epicBroker:
            # The engine resolves the instrument once; a broker never guesses it.
            raise ProtocolError(f"{kind} of {order.client_order_id} lacks epicBroker")
        self._from_engine.add(order.client_order_id)
        known = self.orders.get(order.client_order_id)
        if kind == into.OrderOpen.TYPE:
            order.validate()
            if order.client_order_id in self._seen_open:
                # The engine never resends; if it ever does, the broker must not see it twice.
                log.warning("event=duplicate_open_ignored account=%s order=%s",
                            self.account_id, order.client_order_id)
                return
            self._seen_open.add(order.client_order_id)
            self.orders[order.client_order_id] = order
        elif known is not None:
            # Keep our live copy (fills, broker ref) but take the request's new parameters.
            for name in ("stop_loss", "take_profit", "price"):
                value = getattr(wire, name)
                if value is not None:
                    setattr(known, name, value)
            if kind != into.OrderClose.TYPE:
                order = known
        if kind != into.OrderStatusRequest.TYPE and not self.is_connected:
            self.send_order_refused(order, f"account {self.account_id} is {self.connection_state}; "
                                           "order not sent", kind=kind)
            return
        if kind == into.OrderClose.TYPE:
            order.validate()
            self.orders[order.client_order_id] = order
        deadline = time.monotonic() + self.settings.order_timeout
        self._pending[order.client_order_id] = _PendingOrder(order, kind, deadline)
        try:
            self._order_handlers[kind](order)
        except OperationalError:
            raise
        except (InvalidOrder, RequestNotSent) as exc:
            # Raised before the request went out: refused, and the strategy is told.
            self.send_order_refused(order, str(exc), kind=kind)
        except Exception as exc:  # a broker library may raise anything, possibly after sending
            log.exception("event=order_request_crashed account=%s order=%s request=%s",
                          self.account_id, order.client_order_id, kind)
            self.send_order_unknown(order, f"{kind} failed in the broker's client: {type(exc).__name__}: {exc}")

    def _dispatch_history(self, query: into.HistoryQuery) -> None:
        request_id = query.request_id
        if not request_id:
            raise ProtocolError("history_request lacks a 'request_id'")
        request = msgspec.structs.asdict(query)
        self._history_deadlines[request_id] = time.monotonic() + HISTORY_SILENCE_S
        try:
            request = check_history_request(request)
        except ProtocolError as exc:
            self.send_history_error(request_id, str(exc))
            return
        if not self.is_connected:
            self.send_history_error(request_id, f"account {self.account_id} is {self.connection_state}")
            return
        try:
            self.do_async_request_history(request)
        except OperationalError:
            raise
        except Exception as exc:  # a broker's bug must still end the request, in one line
            log.exception("event=history_request_crashed account=%s request=%s", self.account_id, request_id)
            self.send_history_error(request_id, f"{type(exc).__name__}: {exc}")

    def _check_history_timeouts(self, now: float) -> None:
        for request_id, deadline in list(self._history_deadlines.items()):
            if now >= deadline:
                self.send_history_error(request_id, f"no history from broker {self.broker_name} "
                                                    f"within {HISTORY_SILENCE_S:g}s")

    def _check_order_timeouts(self, now: float) -> None:
        for key, pending in list(self._pending.items()):
            if now < pending.deadline:
                continue
            if not pending.queried and self.is_connected:
                pending.queried = True
                pending.deadline = now + self.settings.order_timeout
                log.warning("event=order_timeout account=%s order=%s request=%s action=query_status",
                            self.account_id, key, pending.kind)
                self._guarded(self.do_async_request_order_status, pending.order)
            else:
                self._pending.pop(key, None)
                self.send_order_unknown(pending.order, f"no answer from broker within "
                                                       f"{self.settings.order_timeout:g}s")

    def _shutdown(self) -> None:
        try:
            self.on_account_manager_shutdown()
        except Exception as exc:  # shutdown must finish whatever the broker library does
            log.warning("event=shutdown_hook_failed account=%s reason=%s", self.account_id, exc)
        self.out_queue.put(out.ShutdownAck(account=self.account_id))
        self._close()

    def _close(self) -> None:
        self._send_queued()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):  # closing twice is harmless
                os.close(fd)

    def stop(self) -> None:
        """Ask the loop to finish its turn and shut down (loop thread only)."""
        self._running = False
