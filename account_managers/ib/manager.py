"""The Interactive Brokers Account Manager: engine requests in, IB events out.

``IBSession`` (session.py) runs ib_insync on its own asyncio thread; this class lives on
the worker's loop, submits work to the session and receives its events through
``call_soon_threadsafe``. Orders carry their client order id in IB's ``orderRef``, so
after a reconnect (or a worker restart) open orders and executions are matched back to
the engine's orders by that reference alone.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from account_managers.ib import parsing as p
from account_managers.ib.config import IBAccountSettings, IBBrokerSettings
from account_managers.ib.session import ClientIdInUse, IBSession, fill_dict, trade_dict
from account_managers.ib.throttle import HistoricalPacer
from maotrade.account_manager import BaseAccountManager, InitResult
from maotrade.bars import BarBuilder
from maotrade.errors import InvalidOrder, OperationalError
from maotrade.protocol import to_worker
from maotrade.order import (BaseOrder, BracketKind, BrokerOrder, Fill, OrderAction, OrderStatus, OrderType, bracket_legs,
                            split_child_id)

log = logging.getLogger(__name__)

DATA_FRAMES = {1: "SECOND", 5: "5SECOND", 60: "1MINUTE", 300: "5MINUTE", 900: "15MINUTE",
               3600: "HOUR"}
HISTORY_FRAMES = {60: "MINUTE", 300: "MINUTE_5", 900: "MINUTE_15", 3600: "HOUR", 86400: "DAY"}
ORDER_TEMPLATE = {"order_types": ["MARKET", "LIMIT", "STOP"],
                  "time_in_force": sorted(p.TIME_IN_FORCE), "stop_loss": True, "take_profit": True,
                  "partial_close": True}
MAX_HISTORY_BARS = 1000
# A download waiting on IB's pacing sends an empty part this often, so it is not taken for dead.
DOWNLOAD_KEEPALIVE_S = 30.0


@dataclass
class _Subscription:
    epic: str
    epic_broker: str
    time_frame: int
    kind: str  # "bars" (5-second real-time bars) or "ticks"
    builder: BarBuilder
    handle: Any = None


@dataclass
class _HeldFill:
    event: dict
    deadline: float


@dataclass
class _HistoryRequest:
    epic: str
    epic_broker: str
    time_frame: int
    count: int
    ready_at: float = 0.0
    key: tuple = field(default_factory=tuple)


@dataclass
class _Download:
    """One history download: its request and the spans still to ask IB for, oldest first."""

    request: dict
    chunks: deque
    in_flight: bool = False
    last_part: float = 0.0


def _child_params(order: BaseOrder, quantity: float, suffix: str) -> p.OrderParams:
    """A bracket child closing ``order``: STP at its stop loss or LMT at its take profit."""
    stop = suffix == p.STOP_LOSS_SUFFIX
    return p.OrderParams(action="SELL" if order.qty > 0 else "BUY", quantity=quantity,
                         order_type="STP" if stop else "LMT",
                         limit_price=None if stop else order.take_profit,
                         stop_price=order.stop_loss if stop else None, tif="GTC",
                         order_ref=p.child_ref(order.client_order_id, suffix))


def _apply_status(order: BaseOrder, status: str, reason: str) -> None:
    """Record IB's word on ``order`` (a cancel without a reason says where it happened)."""
    order.set_status(status, reason or ("cancelled at IB" if status == OrderStatus.CANCELLED else ""))


class IBAccountManager(BaseAccountManager):
    """Interactive Brokers through TWS / IB Gateway, on ib_insync."""

    settings_model = IBBrokerSettings
    account_settings_model = IBAccountSettings
    CAPABILITIES = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": True,
                    "stop_amend": True, "partial_close": True, "market_data": True,
                    "bracket": BracketKind.ORDERS, "history": True}

    def __init__(self, config, in_queue, out_queue):
        super().__init__(config, in_queue, out_queue)
        self.account: str = self.account_settings.account
        self.session: Optional[IBSession] = None
        self._specs: dict[str, p.ContractSpec] = {}
        self._bad_mapping: dict[str, str] = {}
        for epic, epic_broker in self.epic_mapping.items():
            try:
                self._specs[epic_broker] = p.parse_epic_broker(epic_broker)
            except InvalidOrder as exc:
                log.error("event=bad_epic_mapping account=%s epic=%s reason=%s",
                          self.account_id, epic, exc)
                self._bad_mapping[epic_broker] = str(exc)
        self._epic_broker_by_key = {spec.key: eb for eb, spec in self._specs.items()}
        self._contracts: dict[str, Any] = {}
        self._unknown: dict[str, str] = {}
        self._held_fills: dict[str, _HeldFill] = {}
        self._early_commissions: OrderedDict[str, float] = OrderedDict()
        self._deferred_status: dict[str, dict] = {}
        self._subs: dict[tuple[str, int], _Subscription] = {}
        self._pacer = HistoricalPacer(self.settings.historical_per_10min,
                                      self.settings.historical_same_contract_2s)
        self._history_waiting: list[_HistoryRequest] = []
        self._downloads: deque[_Download] = deque()
        self._last_exec_ms = 0
        self._link_down = False

    # ------------------------------------------------------------------ lifecycle
    def on_account_manager_init(self) -> InitResult:
        """Connect (or reconnect) as one step: connect, fetch open orders, executions
        since the last one seen and positions, reconcile, restore subscriptions."""
        s = self.settings
        self._close_session()
        guard = self.new_session()
        session = IBSession(guard(self._on_event), s.max_requests_per_second)
        try:
            snapshot = session.connect(s.tws_host, s.tws_port, s.client_id, s.timeout,
                                       self._specs, self._last_exec_ms)
        except ClientIdInUse as exc:
            session.close()
            self.send_error(str(exc))
            raise
        except Exception:
            session.close()
            raise
        if self.account not in snapshot["accounts"]:
            session.close()
            raise OperationalError(f"account {self.account} is not managed by this TWS login "
                                   f"(managed: {', '.join(snapshot['accounts']) or 'none'})")
        self.session = session
        self._link_down = False
        self._contracts = snapshot["contracts"]
        self._unknown = dict(snapshot["unknown"], **self._bad_mapping)
        for epic_broker, reason in snapshot["unknown"].items():
            log.warning("event=unknown_contract account=%s epicBroker=%s reason=%s",
                        self.account_id, epic_broker, reason)
        self._reconcile(snapshot)
        self._restore_subscriptions()
        state = session.call(session.account_snapshot, self.account).result(s.timeout)
        log.info("event=ib_ready account=%s client_id=%s orders=%d fills=%d",
                 self.account_id, s.client_id, len(snapshot["trades"]), len(snapshot["fills"]))
        return (True, self._account_info(state), self._portfolio(state), ORDER_TEMPLATE,
                HISTORY_FRAMES, DATA_FRAMES)

    def on_account_manager_shutdown(self) -> None:
        """Disconnect from TWS and stop the session thread."""
        self._close_session()

    def _close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        while self._downloads:  # their answers died with the session; a new download resumes them
            job = self._downloads.popleft()
            self.send_history_error(job.request["request_id"], "TWS connection closed during the download")
        for sub in self._subs.values():
            sub.handle = None

    def account_manager_main(self, time_now: int) -> None:
        """Release fills whose commission report is late, close tick bars, send paced
        historical requests."""
        now = time.monotonic()
        for exec_id, held in list(self._held_fills.items()):
            if now >= held.deadline:
                del self._held_fills[exec_id]
                log.warning("event=commission_missing account=%s exec_id=%s action=send_without",
                            self.account_id, exec_id)
                self._emit_fill(held.event, 0.0)
        for sub in self._subs.values():
            if sub.kind == "ticks":
                for bar in sub.builder.close_due(time_now):
                    self.send_realtime_data(bar)
        for request in [r for r in self._history_waiting if now >= r.ready_at]:
            self._history_waiting.remove(request)
            self._send_history(request)
        if self._downloads:
            self._pump_download(now)

    # ------------------------------------------------------------------ IB events
    def _on_event(self, event: dict) -> None:
        kind = event["event"]
        if kind == "status":
            self._on_status(event)
        elif kind == "exec":
            self._on_exec(event)
        elif kind == "commission":
            self._on_commission(event)
        elif kind == "error":
            self._on_error(event)
        elif kind == "bar":
            self._on_bar(event)
        elif kind == "tick":
            self._on_tick(event)
        elif kind == "disconnected":
            self._socket_lost("TWS closed the API connection")

    def _socket_lost(self, reason: str) -> None:
        self._close_session()
        self._link_down = False
        self.connection_lost(reason)

    def _on_error(self, event: dict) -> None:
        code, message, req_id = event["code"], event["message"], event["req_id"]
        change = p.connectivity_change(code)
        if change == "lost":
            log.warning("event=ib_connectivity_lost account=%s code=%d", self.account_id, code)
            if self.is_connected:
                self._link_down = True
                self.connection_suspended(f"IB {code}: {message}")
        elif change in ("restored", "restored_data_lost"):
            log.info("event=ib_connectivity_restored account=%s code=%d", self.account_id, code)
            if self._link_down:
                self._resync(resubscribe=change == "restored_data_lost")
        elif change == "farm_broken":
            log.warning("event=ib_farm account=%s code=%d message=%s", self.account_id, code, message)
        elif change == "farm_ok":
            log.info("event=ib_farm account=%s code=%d", self.account_id, code)
        elif code == p.PACING_VIOLATION and p.NO_DATA_TEXT in message:
            log.info("event=ib_history_empty account=%s req_id=%s", self.account_id, req_id)
        elif code == p.PACING_VIOLATION:
            log.warning("event=ib_pacing_violation account=%s req_id=%s", self.account_id, req_id)
            self.send_error(f"IB {code}: {message}")
        elif code in p.ORDER_REJECT_CODES or code in p.ORDER_CANCEL_CODES or code in p.ORDER_WARNING_CODES:
            log.info("event=ib_order_message account=%s req_id=%s code=%d message=%s",
                     self.account_id, req_id, code, message)
        else:
            log.warning("event=ib_error account=%s req_id=%s code=%d message=%s",
                        self.account_id, req_id, code, message)

    def _resync(self, resubscribe: bool) -> None:
        """TWS regained IB's servers: catch up on orders and fills, then declare ready."""
        session = self.session

        def gather():
            return {"trades": [t for t in session.ib.trades()],
                    "fills": list(session.ib.fills())}

        def done(raw):
            self._reconcile({"trades": [trade_dict(t) for t in raw["trades"]],
                             "fills": [fill_dict(f) for f in raw["fills"]]})
            if resubscribe:
                self._restore_subscriptions()
            self._link_down = False
            self.connection_resumed("IB connectivity restored")

        self._ib_call(gather, on_result=done,
                      on_error=lambda exc: self._socket_lost(f"resync failed: {exc}"))

    # -- orders ---------------------------------------------------------------------
    def _on_status(self, event: dict) -> None:
        ref = event["order_ref"]
        order = self._order_of(ref)
        if order is None:
            return
        if event.get("error_code") and order.is_leg:
            log.warning("event=bracket_child_refused account=%s ref=%s reason=%s",
                        self.account_id, ref, event["message"])
        if event.get("order_id") and not order.broker_ref:
            order.broker_ref = str(event["order_id"])
        if any(h.event["order_ref"] == ref for h in self._held_fills.values()):
            # a terminal status must not overtake a fill still waiting for its commission
            self._deferred_status[ref] = event
            return
        target = p.status_target(order, event["status"], event.get("error_code", 0),
                                 event.get("message", ""))
        if target is None:
            return
        _apply_status(order, *target)
        self.send_request_order_response(order)

    def _on_exec(self, event: dict) -> None:
        exec_id = event["exec_id"]
        if exec_id in self._held_fills:
            return
        if event.get("commission") is not None:
            self._emit_fill(event, event["commission"])
        elif exec_id in self._early_commissions:
            self._emit_fill(event, self._early_commissions.pop(exec_id))
        else:
            self._held_fills[exec_id] = _HeldFill(event, time.monotonic() + self.settings.commission_wait)

    def _on_commission(self, event: dict) -> None:
        held = self._held_fills.pop(event["exec_id"], None)
        if held is not None:
            self._emit_fill(held.event, event["commission"])
            return
        self._early_commissions[event["exec_id"]] = event["commission"]
        while len(self._early_commissions) > 1000:
            self._early_commissions.popitem(last=False)

    def _emit_fill(self, event: dict, commission: float) -> None:
        order = self._order_of(event["order_ref"])
        if order is None:
            log.warning("event=fill_for_unknown_order account=%s ref=%s exec_id=%s",
                        self.account_id, event["order_ref"], event["exec_id"])
            return
        self._last_exec_ms = max(self._last_exec_ms, int(event.get("time_ms") or 0))
        if any(f["exec_id"] == event["exec_id"] for f in order.fills):
            return
        fill = Fill(exec_id=event["exec_id"], qty=abs(event["shares"]), price=event["price"],
                    time=int(event.get("time_ms") or time.time() * 1000), commission=float(commission))
        if not order.broker_ref and event.get("order_id"):
            order.broker_ref = str(event["order_id"])
        try:
            self.send_request_order_response(order, fill)
        except InvalidOrder as exc:
            log.error("event=fill_not_applied account=%s order=%s exec_id=%s reason=%s",
                      self.account_id, order.client_order_id, fill.exec_id, exc)
            return
        deferred = self._deferred_status.get(event["order_ref"])
        if deferred and not any(h.event["order_ref"] == event["order_ref"] for h in self._held_fills.values()):
            del self._deferred_status[event["order_ref"]]
            self._on_status(deferred)

    def _order_of(self, ref: str) -> Optional[BaseOrder]:
        """The order an IB orderRef names: an engine order, or a bracket leg (made from its
        parent here when the engine has not asked about it yet)."""
        order = self.orders.get(ref)
        if order is not None:
            return order
        parent_id, leg = split_child_id(ref)
        parent = self.orders.get(parent_id) if leg else None
        if parent is None:
            return None
        (order,) = bracket_legs(parent, only=leg, order_class=BrokerOrder)
        self.orders[ref] = order
        return order

    def _reconcile(self, snapshot: dict) -> None:
        """Replay what IB knows (fills first, then statuses) onto the engine's orders and legs."""
        known = lambda ref: ref in self.orders or split_child_id(ref)[0] in self.orders  # noqa: E731
        for event in sorted(snapshot["fills"], key=lambda f: f.get("time_ms") or 0):
            if known(event["order_ref"]):
                self._on_exec(event)
        for event in snapshot["trades"]:
            if known(event["order_ref"]):
                self._on_status(event)

    # ------------------------------------------------------------------ requests
    def do_async_request_account_info(self) -> None:
        """Answer from TWS's account stream (cached by ib_insync)."""
        self._ib_call(self.session.account_snapshot, self.account,
                      on_result=lambda state: self.send_account_info(self._account_info(state)),
                      on_error=lambda exc: self.send_error(f"account info failed: {exc}"))

    def do_async_request_portfolio(self) -> None:
        """Answer with IB's portfolio rows and the engine's working orders."""
        self._ib_call(self.session.account_snapshot, self.account,
                      on_result=lambda state: self.send_portfolio(self._portfolio(state)),
                      on_error=lambda exc: self.send_error(f"portfolio failed: {exc}"))

    def do_async_request_order_open(self, order: BaseOrder) -> None:
        """Place a market/limit/stop order, as a bracket when it has stop loss or take profit."""
        try:
            contract = self._contract_for(order)
            params = p.order_params(order)
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc))
            return
        children = []
        if order.stop_loss is not None:
            children.append(_child_params(order, params.quantity, p.STOP_LOSS_SUFFIX))
        if order.take_profit is not None:
            children.append(_child_params(order, params.quantity, p.TAKE_PROFIT_SUFFIX))
        session = self.session

        def placed(ids):
            if not order.broker_ref:
                order.broker_ref = str(ids[0])
            if order.status == OrderStatus.NEW:
                order.set_submitted()
                self.send_request_order_response(order, kind=to_worker.OrderOpen.TYPE)

        self._ib_call(session.place_bracket, contract, params, children, on_result=placed,
                      on_error=lambda exc: self.send_order_refused(order, f"order not sent to IB: {exc}"))

    def do_async_request_order_close(self, order: BaseOrder) -> None:
        """Reduce or close the position at market, checked against IB's positions."""
        try:
            contract = self._contract_for(order)
            order.order_type = OrderType.MARKET
            order.action = OrderAction.CLOSE
            params = p.order_params(order)
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc), kind=to_worker.OrderClose.TYPE)
            return
        session, account = self.session, self.account

        def check_and_place():
            held = sum(pos.position for pos in session.ib.positions(account)
                       if pos.contract.conId == contract.conId)
            if held == 0:
                return f"no open position in {order.epic} to close"
            if (held > 0) == (order.qty > 0):
                return f"close of {order.epic} must be opposite to the position ({held:g}), got {order.qty:g}"
            if abs(order.qty) > abs(held) + 1e-9:
                return f"close of {abs(order.qty):g} {order.epic} exceeds the position of {abs(held):g}"
            return session.place(contract, params)

        def placed(result):
            if isinstance(result, str):
                self.send_order_refused(order, result, kind=to_worker.OrderClose.TYPE)
                return
            order.broker_ref = str(result)
            if order.status == OrderStatus.NEW:
                order.set_submitted()
                self.send_request_order_response(order, kind=to_worker.OrderClose.TYPE)

        self._ib_call(check_and_place, on_result=placed,
                      on_error=lambda exc: self.send_order_refused(order, f"close not sent to IB: {exc}",
                                                                   kind=to_worker.OrderClose.TYPE))

    def do_async_request_stop_order(self, order: BaseOrder) -> None:
        """Amend the stop loss / take profit children, or protect a filled position."""
        if order.stop_loss is None and order.take_profit is None:
            self.send_order_refused(order, "order_stop needs stop_loss or take_profit", kind=to_worker.OrderStop.TYPE)
            return
        try:
            contract = self._contract_for(order)
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc), kind=to_worker.OrderStop.TYPE)
            return
        session = self.session
        coid = order.client_order_id
        filled = order.filled_qty

        def amend():
            missing = []
            if order.stop_loss is not None and not session.modify(
                    p.child_ref(coid, p.STOP_LOSS_SUFFIX), stop_price=order.stop_loss):
                missing.append((p.STOP_LOSS_SUFFIX, "STP", None, order.stop_loss))
            if order.take_profit is not None and not session.modify(
                    p.child_ref(coid, p.TAKE_PROFIT_SUFFIX), limit_price=order.take_profit):
                missing.append((p.TAKE_PROFIT_SUFFIX, "LMT", order.take_profit, None))
            if not missing:
                return ""
            if not filled:
                return f"order {coid} has no working stop loss / take profit to amend and no fill to protect"
            oca = f"oca-{coid}-{int(time.time() * 1000)}"
            for suffix, kind, limit, stop in missing:
                session.place(contract, p.OrderParams(
                    action="SELL" if filled > 0 else "BUY", quantity=abs(filled), order_type=kind,
                    limit_price=limit, stop_price=stop, tif="GTC", order_ref=p.child_ref(coid, suffix)),
                    oca_group=oca if len(missing) > 1 else "")
            return ""

        def amended(problem):
            if problem:
                self.send_order_refused(order, problem, kind=to_worker.OrderStop.TYPE)
            else:
                self.send_request_order_response(order, kind=to_worker.OrderStop.TYPE)

        self._ib_call(amend, on_result=amended,
                      on_error=lambda exc: self.send_order_refused(order, f"amend not sent to IB: {exc}",
                                                                   kind=to_worker.OrderStop.TYPE))

    def do_async_request_order_cancel(self, order: BaseOrder) -> None:
        """Cancel a working order; IB's Cancelled status answers it."""
        if order.is_done:
            self.send_order_refused(order, f"order {order.client_order_id} is {order.status}; "
                                           "nothing to cancel", kind=to_worker.OrderCancel.TYPE)
            return

        def cancelled(found):
            if not found:
                self.send_order_refused(order, f"order {order.client_order_id} is not working at IB",
                                        kind=to_worker.OrderCancel.TYPE)

        self._ib_call(self.session.cancel, order.client_order_id, on_result=cancelled,
                      on_error=lambda exc: self.send_order_refused(order, f"cancel not sent to IB: {exc}",
                                                                   kind=to_worker.OrderCancel.TYPE))

    def do_async_request_order_status(self, order: BaseOrder) -> None:
        """Ask IB (open, completed orders and executions) by orderRef."""
        if self.session is None or not self.is_connected:
            self.send_order_unknown(order, f"account {self.account_id} is {self.connection_state}")
            return
        known = self.orders.setdefault(order.client_order_id, order)

        def answer(found):
            if not found["trades"] and not found["fills"]:
                self.send_order_not_found(known)
                return
            for event in sorted(found["fills"], key=lambda f: f["time_ms"]):
                if not any(f["exec_id"] == event["exec_id"] for f in known.fills):
                    known.add_fill(Fill(event["exec_id"], abs(event["shares"]), event["price"],
                                        event["time_ms"], event["commission"] or 0.0))
            for trade in found["trades"]:
                if not known.broker_ref and trade["order_id"]:
                    known.broker_ref = str(trade["order_id"])
                target = p.status_target(known, trade["status"], trade["error_code"], trade["message"])
                if target is not None:
                    _apply_status(known, *target)
            self.send_order_status(known)

        self._ib_call(self.session.lookup, order.client_order_id, on_result=answer,
                      on_error=lambda exc: self.send_order_unknown(known, f"IB lookup failed: {exc}"))

    # -- market data ------------------------------------------------------------------
    def do_async_request_market_data(self, request: dict) -> bool:
        """Subscribe/unsubscribe bars of ``epic`` at ``time_frame`` seconds, or fetch history.

        Time frames of 5 s and more come from IB's 5-second real-time bars, shorter ones
        from ticks. ``history: N`` (or ``action: "history"`` with ``count``) sends the last
        N completed bars from IB's historical data first.
        """
        action = request.get("action", "subscribe")
        epic = request.get("epic") or ""
        epic_broker = request["epicBroker"]
        epic = epic or self.to_maotrade_epic(epic_broker)
        time_frame = int(request.get("time_frame") or 0)
        if epic_broker not in self._contracts:
            raise InvalidOrder(f"unknown instrument {epic!r} ({epic_broker}): "
                               f"{self._unknown.get(epic_broker, 'not in the epic mapping')}")
        key = (epic_broker, time_frame)
        if action == "unsubscribe":
            sub = self._subs.pop(key, None)
            if sub is not None and sub.handle is not None and self.session is not None:
                self._ib_call(self.session.unsubscribe, sub.kind, sub.handle)
            return sub is not None
        if action == "history":
            return self._queue_history(epic, epic_broker, time_frame, int(request.get("count") or 100))
        if action != "subscribe":
            raise InvalidOrder(f"market data action {action!r} is not subscribe, unsubscribe or history")
        if time_frame <= 0 or (time_frame >= p.REALTIME_BAR_SECONDS and time_frame % p.REALTIME_BAR_SECONDS):
            raise InvalidOrder(f"time frame {time_frame}s not offered; use 1-4 s (ticks) or a multiple of 5 s")
        if request.get("history"):
            self._queue_history(epic, epic_broker, time_frame, int(request["history"]))
        if key not in self._subs:
            kind = "bars" if time_frame >= p.REALTIME_BAR_SECONDS else "ticks"
            sub = _Subscription(epic, epic_broker, time_frame, kind, BarBuilder(epic, time_frame))
            self._subs[key] = sub
            self._start_stream(sub)
        return True

    def _start_stream(self, sub: _Subscription) -> None:
        session, contract, key = self.session, self._contracts[sub.epic_broker], (sub.epic_broker, sub.time_frame)

        def start():
            if sub.kind == "bars":
                return session.subscribe_bars(contract, key, self.settings.bars_what_to_show,
                                              self.settings.use_rth)
            return session.subscribe_ticks(contract, key)

        def started(handle):
            if self._subs.get(key) is sub and self.session is session:
                sub.handle = handle

        self._ib_call(start, on_result=started,
                      on_error=lambda exc: self.send_error(f"market data for {sub.epic} failed: {exc}"))

    def _restore_subscriptions(self) -> None:
        for sub in self._subs.values():
            sub.handle = None
            if sub.epic_broker in self._contracts:
                self._start_stream(sub)

    def _on_bar(self, event: dict) -> None:
        sub = self._subs.get(event["key"])
        if sub is None:
            return
        start = event["time_ms"]
        bars = sub.builder.update_bar(start, event["open"], event["high"], event["low"],
                                      event["close"], event["volume"])
        # a 5-second bar starting at t completes every larger bar that ends at t + 5 s
        bars += sub.builder.close_due(start + p.REALTIME_BAR_SECONDS * 1000)
        for bar in bars:
            self.send_realtime_data(dict(bar, volume=max(bar["volume"], 0.0)))

    def _on_tick(self, event: dict) -> None:
        sub = self._subs.get(event["key"])
        if sub is None:
            return
        for bar in sub.builder.update(event["time_ms"], event["price"], event["size"] or 0.0):
            self.send_realtime_data(bar)

    def _queue_history(self, epic: str, epic_broker: str, time_frame: int, count: int) -> bool:
        if time_frame not in p.BAR_SIZES:
            raise InvalidOrder(f"historical time frame {time_frame}s not offered; "
                               f"choose one of {sorted(p.BAR_SIZES)}")
        if not 0 < count <= MAX_HISTORY_BARS:
            raise InvalidOrder(f"history count must be 1..{MAX_HISTORY_BARS}, got {count}")
        request = _HistoryRequest(epic, epic_broker, time_frame, count,
                                  key=(epic_broker, time_frame, count))
        delay = self._pacer.delay(time.monotonic(), epic_broker, request.key)
        if delay > 0:
            log.info("event=history_paced account=%s epic=%s delay_s=%.1f", self.account_id, epic, delay)
            request.ready_at = time.monotonic() + delay
            self._history_waiting.append(request)
        else:
            self._send_history(request)
        return True

    def _send_history(self, request: _HistoryRequest) -> None:
        delay = self._pacer.delay(time.monotonic(), request.epic_broker, request.key)
        if delay > 0 or self.session is None:
            request.ready_at = time.monotonic() + max(delay, 1.0)
            self._history_waiting.append(request)
            return
        self._pacer.record(time.monotonic(), request.epic_broker, request.key)
        contract = self._contracts[request.epic_broker]

        def sent(rows):
            for row in rows[-request.count:]:
                self.send_realtime_data(p.bar_from_ib(request.epic, request.time_frame, row["time_ms"],
                                                      row["open"], row["high"], row["low"],
                                                      row["close"], row["volume"]))

        self._ib_call(self.session.history, contract, p.BAR_SIZES[request.time_frame],
                      p.history_duration(request.time_frame, request.count),
                      self.settings.bars_what_to_show, self.settings.use_rth, self.settings.timeout * 3,
                      on_result=sent,
                      on_error=lambda exc: self.send_error(f"history of {request.epic} failed: {exc}"))

    # -- history downloads --------------------------------------------------------------
    def do_async_request_history(self, request: dict) -> None:
        """Download ``[start, end)`` with ``reqHistoricalData``, one request per span IB
        serves at once, each sent only when IB's pacing rules allow (shared with the
        subscription history above); each span becomes one part."""
        time_frame, epic_broker = request["time_frame"], request["epicBroker"]
        if time_frame not in p.BAR_SIZES:
            self.send_history_error(request["request_id"], f"IB has no {time_frame}s bars; one of "
                                                           f"{sorted(p.BAR_SIZES)}")
            return
        if epic_broker not in self._contracts:
            self.send_history_error(request["request_id"], f"unknown instrument {request['epic']!r} ({epic_broker}): "
                                                           f"{self._unknown.get(epic_broker, 'not in the epic mapping')}")
            return
        chunks = deque(p.history_chunks(request["start"], request["end"], time_frame))
        self._downloads.append(_Download(request, chunks, last_part=time.monotonic()))
        self._pump_download(time.monotonic())

    def _pump_download(self, now: float) -> None:
        job = self._downloads[0]
        if job.in_flight:
            return
        request = job.request
        start, end = job.chunks[0]
        key = (request["epicBroker"], request["time_frame"], end)
        if self._pacer.delay(now, request["epicBroker"], key) > 0 or self.session is None:
            if now - job.last_part >= DOWNLOAD_KEEPALIVE_S:
                job.last_part = now
                self.send_history(request["request_id"], [], False, start, start)
            return
        self._pacer.record(now, request["epicBroker"], key)
        job.in_flight = True
        self._ib_call(self.session.history_range, self._contracts[request["epicBroker"]], end,
                      p.span_duration(start, end), p.BAR_SIZES[request["time_frame"]],
                      self.settings.bars_what_to_show, self.settings.use_rth, self.settings.timeout * 3,
                      on_result=lambda rows: self._download_part(job, rows),
                      on_error=lambda exc: self._download_failed(job, exc))

    def _download_part(self, job: _Download, rows: list[dict]) -> None:
        request = job.request
        start, end = job.chunks.popleft()
        bars = [p.bar_from_ib(request["epic"], request["time_frame"], row["time_ms"], row["open"], row["high"],
                              row["low"], row["close"], row["volume"])
                for row in rows if start <= row["time_ms"] < end]
        done = not job.chunks
        job.in_flight, job.last_part = False, time.monotonic()
        self.send_history(request["request_id"], bars, done, start, end)
        if done:
            self._downloads.remove(job)
        self.wake_soon()

    def _download_failed(self, job: _Download, exc: BaseException) -> None:
        if job in self._downloads:
            self._downloads.remove(job)
        self.send_history_error(job.request["request_id"], f"IB history of {job.request['epic']} failed: {exc}")
        self.wake_soon()

    # ------------------------------------------------------------------ helpers
    def _ib_call(self, fn: Callable, *args: Any, on_result: Optional[Callable] = None,
                 on_error: Optional[Callable] = None) -> None:
        """Run ``fn`` on the IB thread; its callbacks run back on this loop."""
        if self.session is None:
            if on_error:
                on_error(ConnectionError("not connected to TWS"))
            return
        self.run_blocking(fn, *args, on_result=on_result, on_error=on_error, executor=self.session.call)

    def _contract_for(self, order: BaseOrder):
        epic_broker = order.epicBroker
        contract = self._contracts.get(epic_broker)
        if contract is None:
            reason = self._unknown.get(epic_broker, "not in the epic mapping")
            raise InvalidOrder(f"unknown instrument {order.epic!r} ({epic_broker}): {reason}")
        return contract

    def _account_info(self, state: dict) -> dict:
        return p.normalize_account(self.account, state["values"])

    def _portfolio(self, state: dict) -> dict:
        positions = []
        for row in state["portfolio"]:
            if not row["qty"]:
                continue
            key = p.contract_key(row["symbol"], row["currency"], row["sec_type"], row["expiry"])
            epic_broker = self._epic_broker_by_key.get(key) or "-".join(
                x for x in (row["symbol"], row["currency"], row["sec_type"], row["expiry"]) if x)
            positions.append(p.normalize_position(
                self.to_maotrade_epic(epic_broker), epic_broker, row["qty"], row["avg_cost"],
                p.to_multiplier(row["multiplier"]), row["market_price"], row["unrealized"],
                row["realized"]))
        orders = [{k: v for k, v in o.to_dict().items() if k != "fills"}
                  for o in self.orders.values() if not o.is_done and o.broker_ref]
        return {"positions": positions, "orders": orders}
