"""The FIX Account Manager: engine requests to FIX 4.4 messages and back.

``FixSession`` (session.py) keeps the session alive; this class turns engine requests
into NewOrderSingle / OrderCancelRequest / OrderCancelReplaceRequest / OrderStatusRequest
/ MarketDataRequest, and ExecutionReports, cancel rejects and market data back into
order states, fills and bars. Orders, their fills and every ClOrdID sent live in the
session's ``SessionStore``, so reports resent after a restart are recognised by ExecID
and never fill an order twice.

ClOrdIDs: a new order goes out with ClOrdID = client order id; a cancel uses
``<id>.c<n>`` and a replace ``<id>.r<n>`` (FIX wants a fresh ClOrdID per request).
FIX has no native brackets: the engine places a filled order's stop loss / take profit
as orders of their own (its bracket legs ``<id>/SL``, a STOP, and ``<id>/TP``, a LIMIT)
and cancels one when the other fills; here they are orders like any other.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Optional

import simplefix

from account_managers.fix import parsing as fx
from account_managers.fix.config import FIXAccountSettings, FIXBrokerSettings
from account_managers.fix.parsing import MsgType, Tag
from account_managers.fix.session import FixSession
from account_managers.fix.store import SessionStore
from maotrade.account_manager import BaseAccountManager, InitResult
from maotrade.bars import BarBook, MarketDataRequest
from maotrade.errors import IllegalTransition, InvalidOrder, ProtocolError
from maotrade.protocol import to_worker
from maotrade.order import BaseOrder, Fill, OrderAction, OrderStatus, OrderType
from maotrade.positions import Position

log = logging.getLogger(__name__)

DATA_FRAMES = {1: "SECOND", 60: "1MINUTE", 300: "5MINUTE"}
HISTORY_FRAMES: dict = {}  # FIX 4.4 has no standard historical bars
ORDER_TEMPLATE = {"order_types": ["MARKET", "LIMIT", "STOP"], "time_in_force": ["GTC", "DAY", "IOC", "FOK"],
                  "stop_loss": True, "take_profit": True, "partial_close": True}


def tls_context(settings) -> Optional["ssl.SSLContext"]:
    """The TLS context of the session, verifying the acceptor's certificate; None without TLS."""
    if not settings.tls:
        return None
    import ssl

    return ssl.create_default_context(cafile=settings.tls_ca_file)


class FIXAccountManager(BaseAccountManager):
    """A FIX 4.4 initiator account: orders, fills, positions and bars over one session."""

    settings_model = FIXBrokerSettings
    account_settings_model = FIXAccountSettings
    CAPABILITIES = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": True,
                    "stop_amend": True, "partial_close": True, "market_data": True}

    def __init__(self, config, in_queue, out_queue):
        super().__init__(config, in_queue, out_queue)
        s, a = self.settings, self.account_settings
        self.store = SessionStore(self._store_path())
        self.orders.update(self.store.load_orders())
        self.cl_ord_ids = self.store.load_cl_ord_ids()
        for key in self.orders:
            self._seen_open.add(key)  # an order this session sent is never sent again
        self._request_ids = itertools.count(1)
        self._live_cl_ord_id: dict[str, str] = {}
        for cl_ord_id, (key, purpose) in self.cl_ord_ids.items():
            if purpose in ("new", "replace"):
                self._live_cl_ord_id[key] = cl_ord_id  # rows come back in insertion order
        self._pending_kind: dict[str, str] = {}  # ClOrdID of a cancel/replace -> engine request
        # Price the broker has for each working order, to tell whether an amend moves it.
        self._broker_price: dict[str, Optional[float]] = {k: o.price for k, o in self.orders.items()}
        self.positions: dict[str, Position] = {}
        self.last_price: dict[str, float] = {}
        self._rebuild_positions()
        self.bars = BarBook()
        self.md_requests: dict[str, str] = {}  # MDReqID -> broker symbol
        self._in_init = False
        self._positions_unsupported = False
        self._pos_request: Optional[dict] = None  # the RequestForPositions being answered
        self.session = FixSession(
            host=s.host, port=s.port, sender=s.sender_comp_id, target=s.target_comp_id,
            heartbeat=s.heartbeat_interval, store=self.store, handler=self, timeout=s.timeout,
            begin_string=s.fix_version, reset_on_logon=s.reset_on_logon, username=a.username,
            password=a.password.get_secret_value() if a.password else None,
            grace=s.test_request_grace, tls_context=tls_context(s), tls_server_name=s.tls_server_name)

    def worker_heartbeat_interval(self) -> float:
        """Heartbeat the engine every second: ``heartbeat_interval`` here is FIX HeartBtInt."""
        return min(1.0, self.settings.heartbeat_interval)

    # ------------------------------------------------------------------ lifecycle
    def on_account_manager_init(self) -> InitResult:
        """Connect and log on (blocking up to ``timeout``), then watch the socket."""
        self.watch_fd(self.session.fileno(), None)
        self._in_init = True
        try:
            self.session.logon()
        finally:
            self._in_init = False
        self.watch_fd(self.session.fileno(), self.session.on_readable)
        for key, order in self.orders.items():
            if not order.is_done and order.status != OrderStatus.NEW:
                self._send_status_request(order)  # outcome may have changed while away
        for symbol in sorted(set(self.md_requests.values())):
            # A broker forgets subscriptions with the session: ask again.
            self.md_requests = {k: v for k, v in self.md_requests.items() if v != symbol}
            self._subscribe(symbol)
        return (True, self._account_info(), self._portfolio(), ORDER_TEMPLATE,
                HISTORY_FRAMES, DATA_FRAMES)

    def on_account_manager_shutdown(self) -> None:
        """Log out politely and close the store."""
        self.watch_fd(self.session.fileno(), None)
        self.session.logout("shutdown", wait=min(2.0, self.settings.timeout))
        self.store.close()

    def account_manager_main(self, time_now: int) -> None:
        """Keep the session alive; complete bars whose time is over."""
        self.session.on_timer()
        if self._pos_request is not None and time_now >= self._pos_request["deadline"]:
            self._finish_positions("no PositionReport within timeout")
        for bar in self.bars.close_due(time_now):
            self.send_realtime_data(bar)

    # ------------------------------------------------------------------ session callbacks
    def on_disconnect(self, reason: str) -> None:
        """The FIX session went down: stop watching the socket and reconnect with backoff."""
        for fd in list(self._watched):
            self.watch_fd(fd, None)
        if not self._in_init:
            self.connection_lost(reason)

    def on_session_reject(self, ref_msg_type: Optional[str], ref_raw: Optional[bytes], reason: str) -> None:
        """A session-level Reject (35=3) of one of our messages: fail the request it was."""
        if ref_raw is None or ref_msg_type not in (MsgType.NEW_ORDER_SINGLE, MsgType.ORDER_CANCEL_REQUEST,
                                                   MsgType.ORDER_CANCEL_REPLACE_REQUEST):
            self.send_error(f"FIX session reject of {ref_msg_type or 'a message'}: {reason}")
            return
        parser = simplefix.FixParser()
        parser.append_buffer(ref_raw)
        sent = parser.get_message()
        self._refuse_request(fx.text(sent, Tag.ClOrdID) or "", f"FIX session reject: {reason}")

    def on_app_message(self, msg: simplefix.FixMessage, poss_dup: bool) -> None:
        """Dispatch an application message from the session."""
        msg_type = fx.text(msg, Tag.MsgType)
        try:
            if msg_type == MsgType.EXECUTION_REPORT:
                self._on_execution_report(fx.parse_execution_report(msg), poss_dup)
            elif msg_type == MsgType.ORDER_CANCEL_REJECT:
                self._on_cancel_reject(msg)
            elif msg_type == MsgType.BUSINESS_MESSAGE_REJECT:
                self._on_business_reject(msg)
            elif msg_type in (MsgType.MARKET_DATA_SNAPSHOT, MsgType.MARKET_DATA_INCREMENTAL):
                self._on_market_data(msg)
            elif msg_type in (MsgType.REQUEST_FOR_POSITIONS_ACK, MsgType.POSITION_REPORT):
                self._on_positions(msg, msg_type)
            elif msg_type == MsgType.MARKET_DATA_REQUEST_REJECT:
                symbol = self.md_requests.pop(fx.text(msg, Tag.MDReqID) or "", "?")
                self._drop_bars(symbol)
                self.send_error(f"market data for {self.to_maotrade_epic(symbol)!r} refused by the broker: "
                                f"{fx.text(msg, Tag.Text) or 'no reason given'}")
            else:
                log.info("event=fix_app_ignored msg_type=%s", msg_type)
        except ProtocolError as exc:
            log.warning("event=fix_bad_app_message msg_type=%s reason=%s", msg_type, exc)
        except IllegalTransition as exc:
            log.warning("event=fix_report_out_of_order reason=%s", exc)

    # ------------------------------------------------------------------ requests
    def do_async_request_account_info(self) -> None:
        """Answer from what the session has seen (FIX 4.4 carries no balances)."""
        self.send_account_info(self._account_info())

    def do_async_request_portfolio(self) -> None:
        """Answer with positions built from our fills and the working orders, or from the
        broker's PositionReports when ``request_positions`` is set and it offers them."""
        if not self.settings.request_positions or self._positions_unsupported:
            self.send_portfolio(self._portfolio())
            return
        if self._pos_request is not None:
            return  # one request at a time; its answer serves this one too
        req_id = f"pos-{next(self._request_ids)}"
        self._pos_request = {"id": req_id, "expected": None, "reports": {},
                             "deadline": fx.utc_ms(None) + int(self.settings.timeout * 1000)}
        self.session.send_app(MsgType.REQUEST_FOR_POSITIONS,
                              fx.request_for_positions(req_id, self.account_settings.account))

    def do_async_request_market_data(self, request: dict) -> bool:
        """Subscribe or unsubscribe trades/quotes of one instrument via 35=V."""
        wanted = MarketDataRequest(request)
        epic, symbol, time_frame = wanted.epic, wanted.epic_broker, wanted.time_frame
        if not self.settings.market_data:
            self.send_error(f"market data for {epic!r} refused: broker {self.broker_name or 'FIX'} "
                            "does not offer MarketDataRequest (brokerConfig market_data=false)", request)
            return False
        if time_frame not in DATA_FRAMES:
            raise InvalidOrder(f"time frame {time_frame}s not offered; choose one of {sorted(DATA_FRAMES)}")
        if not wanted.subscribe:
            found = self.bars.unsubscribe(symbol, time_frame)
            if not self.bars.watches(symbol):
                for req_id, sym in list(self.md_requests.items()):
                    if sym == symbol:
                        self.session.send_app(MsgType.MARKET_DATA_REQUEST,
                                              fx.market_data_request(req_id, symbol, False))
                        del self.md_requests[req_id]
            return found
        self.bars.subscribe(epic or self.to_maotrade_epic(symbol), symbol, time_frame)
        if symbol not in self.md_requests.values():
            self._subscribe(symbol)
        return True

    def _subscribe(self, symbol: str) -> None:
        req_id = f"md-{symbol}-{next(self._request_ids)}"
        self.md_requests[req_id] = symbol
        self.session.send_app(MsgType.MARKET_DATA_REQUEST, fx.market_data_request(req_id, symbol, True))

    def do_async_request_order_open(self, order: BaseOrder) -> None:
        """Send a NewOrderSingle with ClOrdID = the client order id."""
        self._send_new(order)

    def do_async_request_order_close(self, order: BaseOrder) -> None:
        """Reduce the position with an opposite order (qty is signed: a sell closes a long)."""
        held = self.positions.get(order.epic)
        if held is None or held.is_flat or (held.qty > 0) == (order.qty > 0) or abs(order.qty) > abs(held.qty) + 1e-9:
            have = 0 if held is None else held.qty
            self.send_order_refused(order, f"order {order.client_order_id}: close of {order.qty} does not "
                                           f"reduce the position of {have} in {order.epic}")
            return
        self._send_new(order)

    def do_async_request_stop_order(self, order: BaseOrder) -> None:
        """Move a working order's price (35=G); its stop loss / take profit are the engine's
        (taken as they are: the legs are placed once it has filled)."""
        order = self.orders.get(order.client_order_id, order)
        if order.is_done:
            self.send_order_refused(order, f"order {order.client_order_id} is {order.status}: nothing "
                                           "to amend at the broker", kind=to_worker.OrderStop.TYPE)
            return
        self.store.save_order(order)
        live = self._live_cl_ord_id.get(order.client_order_id, order.client_order_id)
        if order.order_type != OrderType.MARKET and order.price and order.price != self._sent_price(order):
            self._send_replace(order, live, order.price, to_worker.OrderStop.TYPE)
        else:
            self.send_request_order_response(order, kind=to_worker.OrderStop.TYPE)

    def do_async_request_order_cancel(self, order: BaseOrder) -> None:
        """Send an OrderCancelRequest with OrigClOrdID = the order's live ClOrdID."""
        order = self.orders.get(order.client_order_id, order)
        if order.is_done:
            self.send_order_refused(order, f"order {order.client_order_id} is already {order.status}",
                                    kind=to_worker.OrderCancel.TYPE)
            return
        self._send_cancel(order, to_worker.OrderCancel.TYPE)

    def do_async_request_order_status(self, order: BaseOrder) -> None:
        """Ask the broker with an OrderStatusRequest; the ExecutionReport answers."""
        known = self.orders.get(order.client_order_id)
        if known is None:
            known = order
            self.orders[order.client_order_id] = order
        if not self.is_connected:
            self.send_order_unknown(known, "FIX session is down; status will be asked after reconnect")
            return
        self._send_status_request(known)

    # ------------------------------------------------------------------ sending orders
    @staticmethod
    def _symbol(order: BaseOrder) -> str:
        return order.epicBroker  # resolved once by the engine from the account's mapping

    def _send_new(self, order: BaseOrder) -> None:
        try:
            symbol = self._symbol(order)
            fields = fx.new_order_single(order, order.client_order_id, symbol,
                                         self.account_settings.account)
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc))
            return
        order.epicBroker = symbol
        order.set_submitted()
        self._broker_price[order.client_order_id] = order.price
        self.orders[order.client_order_id] = order
        self._link(order.client_order_id, order.client_order_id, "new")
        self.store.save_order(order)
        self.session.send_app(MsgType.NEW_ORDER_SINGLE, fields)

    def _send_cancel(self, order: BaseOrder, kind: Optional[str]) -> None:
        live = self._live_cl_ord_id.get(order.client_order_id, order.client_order_id)
        cl_ord_id = self._next_cl_ord_id(order.client_order_id, "c")
        self._link(cl_ord_id, order.client_order_id, "cancel")
        if kind:
            self._pending_kind[cl_ord_id] = kind
        self.session.send_app(MsgType.ORDER_CANCEL_REQUEST,
                              fx.cancel_request(order, cl_ord_id, live, self._symbol(order),
                                                self.account_settings.account))

    def _send_replace(self, order: BaseOrder, live: str, price: float, kind: Optional[str]) -> None:
        cl_ord_id = self._next_cl_ord_id(order.client_order_id, "r")
        self._link(cl_ord_id, order.client_order_id, "replace_pending")
        if kind:
            self._pending_kind[cl_ord_id] = kind
        self.session.send_app(MsgType.ORDER_CANCEL_REPLACE_REQUEST,
                              fx.replace_request(order, cl_ord_id, live, self._symbol(order),
                                                 self.account_settings.account, price))

    def _send_status_request(self, order: BaseOrder) -> None:
        try:
            symbol = self._symbol(order)
        except InvalidOrder as exc:
            self.send_order_unknown(order, str(exc))
            return
        self.session.send_app(MsgType.ORDER_STATUS_REQUEST,
                              fx.status_request(order, order.client_order_id, symbol))

    def _next_cl_ord_id(self, key: str, letter: str) -> str:
        n = 1 + sum(1 for k, _ in self.cl_ord_ids.values() if k == key)
        return f"{key}.{letter}{n}"

    def _link(self, cl_ord_id: str, key: str, purpose: str) -> None:
        self.cl_ord_ids[cl_ord_id] = (key, purpose)
        self.store.link_cl_ord_id(cl_ord_id, key, purpose)
        if purpose in ("new", "replace"):
            self._live_cl_ord_id[key] = cl_ord_id

    def _sent_price(self, order: BaseOrder) -> Optional[float]:
        return self._broker_price.get(order.client_order_id)

    # ------------------------------------------------------------------ reports
    def _find(self, *cl_ord_ids: Optional[str]) -> tuple[Optional[BaseOrder], Optional[str]]:
        for cl_ord_id in cl_ord_ids:
            if not cl_ord_id:
                continue
            entry = self.cl_ord_ids.get(cl_ord_id)
            key = entry[0] if entry else (cl_ord_id if cl_ord_id in self.orders else None)
            if key and key in self.orders:
                return self.orders[key], cl_ord_id
        return None, None

    def _on_execution_report(self, er: fx.ExecReport, poss_dup: bool) -> None:
        order, matched = self._find(er.cl_ord_id, er.orig_cl_ord_id)
        if order is None:
            log.warning("event=fix_report_unknown_order cl_ord_id=%s exec_id=%s", er.cl_ord_id, er.exec_id)
            return
        if er.order_id and er.order_id != "NONE":
            order.broker_ref = er.order_id
        kind = self._pending_kind.pop(er.cl_ord_id, None) or ""
        if er.kind == "trade":
            self._on_fill(order, er)
        elif er.kind == "status":
            self._on_status(order, er)
        elif er.kind == "rejected":
            if order.can_move_to(OrderStatus.REJECTED):
                order.set_rejected(er.text or "rejected by the broker")
                self._report(order, kind=to_worker.OrderOpen.TYPE)
        elif er.kind in ("new", "pending_new"):
            if order.status in (OrderStatus.NEW, OrderStatus.SUBMITTED):
                order.set_accepted(er.order_id)
                self._report(order, kind=to_worker.OrderOpen.TYPE)
        elif er.kind == "canceled":
            if not order.is_done:
                order.set_cancelled(er.text or "cancelled")
                self._report(order, kind=kind)  # no kind: the broker cancelled by itself
        elif er.kind == "expired":
            if order.can_move_to(OrderStatus.EXPIRED):
                order.set_expired(er.text or "expired")
                self._report(order)
        elif er.kind == "replaced":
            self._on_replaced(order, er, kind)
        else:
            log.info("event=fix_report_noted order=%s exec_type=%s", order.client_order_id, er.exec_type)

    def _on_fill(self, order: BaseOrder, er: fx.ExecReport) -> None:
        if any(f["exec_id"] == er.exec_id for f in order.fills):
            log.info("event=duplicate_fill_ignored order=%s exec_id=%s", order.client_order_id, er.exec_id)
            return
        fill = Fill(exec_id=er.exec_id, qty=er.last_qty, price=er.last_px, time=er.transact_time,
                    commission=er.commission)
        order.add_fill(fill)
        self._apply_position(order, er.last_qty, er.last_px)
        self.last_price[order.epic] = er.last_px
        self._report(order, fill)

    def _on_status(self, order: BaseOrder, er: fx.ExecReport) -> None:
        if er.ord_status == "8" and er.ord_rej_reason == "5":  # unknown order
            if order.status in (OrderStatus.NEW, OrderStatus.SUBMITTED):
                self.send_order_not_found(order)
            else:
                self.send_order_unknown(order, f"broker does not know order {order.client_order_id}: {er.text}")
            return
        target = er.status
        if target and target != order.status and order.can_move_to(target) and target not in (
                OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            # Fills only ever come from trade reports (they carry the ExecID); the status
            # report moves the other states.
            if target == OrderStatus.ACCEPTED:
                order.set_accepted(er.order_id)
            elif target == OrderStatus.CANCELLED:
                order.set_cancelled(er.text or "cancelled")
            elif target == OrderStatus.REJECTED:
                order.set_rejected(er.text or "rejected by the broker")
            elif target == OrderStatus.EXPIRED:
                order.set_expired(er.text or "expired")
        if er.cum_qty > abs(order.filled_qty) + 1e-9:
            log.warning("event=fix_status_ahead order=%s broker_cum=%s ours=%s", order.client_order_id,
                        er.cum_qty, order.filled_qty)
        self.store.save_order(order)
        self.send_order_status(order)

    def _on_replaced(self, order: BaseOrder, er: fx.ExecReport, kind: str) -> None:
        self._link(er.cl_ord_id, order.client_order_id, "replace")
        self._broker_price[order.client_order_id] = order.price
        target = er.status
        if target and target != order.status and order.can_move_to(target) and target not in (
                OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            order._move(target)  # noqa: SLF001 - a replace keeps the order's own state
        self._report(order, kind=kind or to_worker.OrderStop.TYPE)

    def _on_cancel_reject(self, msg: simplefix.FixMessage) -> None:
        self._refuse_request(fx.text(msg, Tag.ClOrdID) or "",
                             fx.text(msg, Tag.Text) or "cancel/replace rejected by the broker",
                             response_to=fx.text(msg, Tag.CxlRejResponseTo))

    def _refuse_request(self, cl_ord_id: str, reason: str, response_to: Optional[str] = None) -> None:
        entry = self.cl_ord_ids.get(cl_ord_id)
        order = self.orders.get(entry[0]) if entry else None
        if order is None:
            log.warning("event=fix_reject_unknown_request cl_ord_id=%s reason=%s", cl_ord_id, reason)
            return
        purpose = entry[1]
        kind = self._pending_kind.pop(cl_ord_id, None)
        if purpose == "new":
            if order.can_move_to(OrderStatus.REJECTED):
                order.set_rejected(reason)
                self._report(order, kind=to_worker.OrderOpen.TYPE)
            return
        if kind is None:
            kind = to_worker.OrderCancel.TYPE if (purpose == "cancel" or response_to == "1") else to_worker.OrderStop.TYPE
        if purpose == "replace_pending" and order.client_order_id in self._broker_price:
            order.price = self._broker_price[order.client_order_id]  # the broker kept the old price
            self.store.save_order(order)
        self.send_order_refused(order, reason, kind=kind)

    def _on_business_reject(self, msg: simplefix.FixMessage) -> None:
        ref_type = fx.text(msg, Tag.RefMsgType) or "?"
        ref_id = fx.text(msg, Tag.BusinessRejectRefID) or ""
        reason = fx.text(msg, Tag.Text) or fx.BUSINESS_REJECT_REASON.get(
            fx.text(msg, Tag.BusinessRejectReason) or "", "business reject")
        if ref_type in (MsgType.NEW_ORDER_SINGLE, MsgType.ORDER_CANCEL_REQUEST,
                        MsgType.ORDER_CANCEL_REPLACE_REQUEST) and ref_id in self.cl_ord_ids:
            self._refuse_request(ref_id, f"business reject: {reason}")
            return
        if ref_type == MsgType.REQUEST_FOR_POSITIONS:
            self._positions_unsupported = True
            self._finish_positions(f"broker does not offer RequestForPositions: {reason}")
            return
        if ref_type == MsgType.MARKET_DATA_REQUEST:
            self._drop_bars(self.md_requests.pop(ref_id, ""))
        self.send_error(f"broker rejected a 35={ref_type} message ({ref_id or 'no id'}): {reason}")

    def _on_market_data(self, msg: simplefix.FixMessage) -> None:
        entries = fx.md_entries(msg)
        symbol = fx.text(msg, Tag.Symbol) or self.md_requests.get(fx.text(msg, Tag.MDReqID) or "", "")
        by_symbol: dict[str, list[dict]] = {}
        for entry in entries:
            by_symbol.setdefault(entry.get(Tag.Symbol) or symbol, []).append(entry)
        now = int(fx.utc_ms(None))
        for sym, group in by_symbol.items():
            price = fx.md_price(group)
            if price is None:
                continue
            self.last_price[self.to_maotrade_epic(sym)] = price
            size = sum(float(e.get(Tag.MDEntrySize, 0) or 0) for e in group if e.get(Tag.MDEntryType) == "2")
            for bar in self.bars.on_price(sym, now, price, size):
                self.send_realtime_data(bar)

    def _on_positions(self, msg: simplefix.FixMessage, msg_type: str) -> None:
        request = self._pos_request
        if request is None or fx.text(msg, Tag.PosReqID) != request["id"]:
            return
        result = fx.text(msg, Tag.PosReqResult) or "0"
        total = fx.number(msg, Tag.TotalNumPosReports)
        if total is not None:
            request["expected"] = int(total)
        if msg_type == MsgType.REQUEST_FOR_POSITIONS_ACK and result not in ("0", "2"):
            self._finish_positions(f"RequestForPositions refused (PosReqResult {result}): "
                                   f"{fx.text(msg, Tag.Text) or 'no reason given'}")
            return
        if msg_type == MsgType.POSITION_REPORT:
            symbol, qty = fx.position_report(msg)
            request["reports"][symbol] = qty
        if result == "2" or (request["expected"] is not None and len(request["reports"]) >= request["expected"]):
            self._finish_positions()

    def _finish_positions(self, fallback_reason: str = "") -> None:
        """Answer the pending portfolio request: broker positions, or ours if none came."""
        request, self._pos_request = self._pos_request, None
        portfolio = self._portfolio()
        if fallback_reason or request is None:
            log.warning("event=fix_positions_fallback reason=%s", fallback_reason)
        else:
            ours = {p["epicBroker"]: p for p in portfolio["positions"]}
            positions = []
            for symbol, qty in sorted(request["reports"].items()):
                epic = self.to_maotrade_epic(symbol)
                mine = ours.get(symbol) or {}
                same = abs(mine.get("qty", 0) - qty) < 1e-9
                positions.append({"epic": epic, "epicBroker": symbol, "qty": qty,
                                  "avg_price": mine.get("avg_price") if same else None,
                                  "market_price": self.last_price.get(epic),
                                  "unrealized_pnl": mine.get("unrealized_pnl") if same else None,
                                  "realized_pnl": mine.get("realized_pnl", 0.0)})
            portfolio["positions"] = positions
        self.send_portfolio(portfolio)

    def _drop_bars(self, symbol: str) -> None:
        self.bars.drop(symbol)

    # ------------------------------------------------------------------ book keeping
    def _report(self, order: BaseOrder, fill: Optional[Fill] = None, kind: str = "") -> None:
        self.store.save_order(order)
        self.send_request_order_response(order, fill, kind=kind)

    def _apply_position(self, order: BaseOrder, qty: float, price: float) -> None:
        position = self.positions.setdefault(order.epic, Position(order.epic))
        position.apply_fill(qty if order.qty > 0 else -qty, price)

    def _rebuild_positions(self) -> None:
        fills = []
        for order in self.orders.values():
            for f in order.fills:
                fills.append((f["time"], f["exec_id"], order, f))
        for _, _, order, f in sorted(fills, key=lambda item: (item[0], item[1])):
            self._apply_position(order, f["qty"], f["price"])
            self.last_price[order.epic] = f["price"]

    def _account_info(self) -> dict:
        realized = sum(p.realized_pnl for p in self.positions.values())
        unrealized = sum(p.unrealized_pnl(self.last_price.get(e)) for e, p in self.positions.items())
        # FIX 4.4 sessions carry no balances: what is not known is None, never invented.
        return {"account": self.account_settings.account, "currency": self.account_settings.currency,
                "balance": None, "equity": None, "available": None, "margin_used": None,
                "unrealized_pnl": unrealized, "realized_pnl": realized}

    def _portfolio(self) -> dict:
        positions = []
        for epic, p in sorted(self.positions.items()):
            if p.is_flat and not p.realized_pnl:
                continue
            data = p.to_dict(self.last_price.get(epic))
            data["epicBroker"] = self.epic_mapping.get(epic, epic)
            positions.append(data)
        orders = [o.to_dict() for o in self.orders.values() if not o.is_done]
        return {"positions": positions, "orders": orders}

    def _store_path(self) -> Path:
        s = self.settings
        data_dir = Path(self.runtime.get("data_dir") or ".")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{s.sender_comp_id}-{s.target_comp_id}")
        return data_dir / "fix" / f"{safe}.sqlite"
