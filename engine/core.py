"""The engine: one loop that routes between clients, the journal and account workers.

Each turn: wait (up to ``TURN_MS``) for worker messages, client messages or a worker
exit; apply what arrived through two dispatch tables built once (worker messages by
type, client messages by type); run the supervisor; flush every socket. The engine is
the only writer of account state (journal) and never blocks on a worker or a client.

The loop owns the sockets and does all the sending; the state lives with its owners:
``engine.accounts`` (the account book and its sync state machine), ``engine.orders``
(every order), ``engine.market_data`` (subscriptions, fan-out, staleness, replay),
``engine.clients`` (named sessions, who hears of an order), ``engine.ops`` (operator
requests, which return what to send), ``engine.history`` (historical data requests) and
``engine.views`` (status documents).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Optional

import zmq

from engine.accounts import AccountBook, AccountRuntime, AccountState
from engine.bus import ClientSession, EngineBus
from engine.clients import Clients
from engine.faults import failpoint
from engine.history import HistoryRouter
from engine.journal import Journal
from engine.market_data import MarketData
from engine.ops import Handler, Operations
from engine.options import EngineOptions
from engine.orders import CREATING_REQUESTS, Dispatch, OrderOutcome, OrderRouter
from engine.reconcile import apply_action, find_differences
from engine.risk import RiskSettings
from engine.supervisor import Supervisor
from engine.views import order_view, portfolio_view, status_view
from maotrade.errors import InvalidOrder, MAOTradeError, ProtocolError
from maotrade.messages import (ClientToEngine as FromClient, EngineToClient as ToClient,
                               EngineToWorker as ToWorker, WorkerToEngine as FromWorker, message)
from maotrade.order import BaseOrder, OrderStatus
from maotrade.protocol import to_worker
from maotrade.protocol.bar_block import bar_maps, decode_rows, pack_rows

log = logging.getLogger(__name__)

TURN_MS = 50
SUPERVISION_INTERVAL_S = 0.1
INFO_REFRESH_S = 1.0
# Worker messages that carry nothing but the news that the worker is alive.
LIVENESS_ONLY = frozenset({FromWorker.HEARTBEAT, FromWorker.SHUTDOWN_ACK})
WORKER_BUDGET_S = 0.01  # seconds of worker messages per turn before clients are served


# Sent to a broker that has not said it holds them (legs waiting for their parent excepted).
IN_FLIGHT = frozenset({OrderStatus.NEW, OrderStatus.SUBMITTED, OrderStatus.UNKNOWN})

class Engine:
    """Supervises account workers and serves clients over the bus."""

    def __init__(self, documents: list[dict], options: EngineOptions, run_dir: Path,
                 log_file: Optional[str] = None, on_event: Optional[Callable[[dict], None]] = None,
                 risk_settings: Optional[RiskSettings] = None):
        """``documents`` are the accounts' configurations; ``options`` how the engine runs
        (data directory, timeouts, durability, tcp address); ``run_dir`` holds its ipc
        sockets; ``on_event`` sees every published message (the console)."""
        self.options = options
        self.data_dir = options.data_dir
        self.run_dir = Path(run_dir)
        self.log_level = options.log_level
        self.log_file = log_file
        self.journal = Journal(self.data_dir / "journal.sqlite", durability=options.durability)
        self.bus = EngineBus(self.run_dir, tcp_address=options.listen, data_dir=self.data_dir)
        self.supervisor = Supervisor(heartbeat_timeout=options.heartbeat_timeout)
        self.accounts = AccountBook(documents)
        self.market_data = MarketData(self.accounts, lambda account, msg: self.bus.open_worker_queue(account).put(msg))
        self.ops = Operations(self.accounts, self.journal, self.data_dir, self.supervisor, self.market_data,
                              risk_settings)
        self.router = OrderRouter(self.journal, self.accounts, risk_check=self.ops.risk_check,
                                  unknown_timeout=options.unknown_timeout)
        self.ops.attach(self.router)
        self.history = HistoryRouter(self.accounts, self.bus)
        self.on_event = on_event
        # A console that shows no bars should not cost a map per bar.
        self._bars_to_on_event = on_event is not None and getattr(on_event, "wants_bars", True)
        self._undelivered: list[dict] = []  # events for ``on_event`` waiting for the turn's commit
        self._created = 0  # order-creating requests this turn queued for workers
        self.started = time.time()
        self.running = False
        self.stop_requested = False
        self.malformed_worker_messages = 0
        self._poller: Optional[zmq.Poller] = None
        self._next_supervision = 0.0
        self._polled_sentinels: set = set()
        #: more sections of ``status()`` (name -> function), e.g. the strategies of ``maotrade start``.
        self.status_extras: dict[str, Callable[[], object]] = {}
        self.clients = Clients(self.bus, self.accounts, self.market_data)
        self._client_table = self._client_handlers()
        self._worker_table = self._worker_handlers()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the bus and spawn one worker per account."""
        for account, runtime in self.accounts.items():
            self.bus.open_worker_queue(account)
            spec = {"config": {**runtime.document, "runtime": {"data_dir": str(self.data_dir)}},
                    "in_addr": self.bus.worker_in_address(account),
                    "out_addr": self.bus.worker_out_address, "log_level": self.log_level,
                    "log_file": self.log_file, "engine_pid": os.getpid()}
            self.supervisor.add(account, spec)
            self._emit(message(ToClient.ACCOUNT_STATUS, account=account, state=AccountState.STARTING,
                               broker=runtime.document.get("brokerName")))
        self.running = True

    def run(self, until: Optional[Callable[[], bool]] = None) -> None:
        """Turn the loop until ``stop()`` is called (or ``until()`` is true)."""
        while self.running and not self.stop_requested and not (until and until()):
            self.turn()

    def stop(self) -> None:
        """Ask the loop to end after this turn (safe from a signal handler)."""
        self.stop_requested = True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop clients and workers cleanly, then close the journal."""
        self._warn_in_flight()
        for session in self.bus.sessions():
            session.put(message(ToClient.STOPPING))
        self.bus.flush_clients()
        self.supervisor.stop_all(self._send_shutdown, timeout)
        for runtime in self.accounts.values():
            runtime.state = AccountState.STOPPED
        self.bus.close()
        self.ops.close()
        self.journal.close()
        self.running = False
        log.info("event=engine_stopped")

    def _warn_in_flight(self) -> None:
        """Say which orders the broker has not confirmed yet: stopping now does not stop them."""
        unconfirmed = [order for account in self.accounts for order in self.router.open_orders(account)
                       if order.status in IN_FLIGHT and not (order.is_leg and order.status == OrderStatus.NEW)]
        if unconfirmed:
            shown = ", ".join(f"{o.client_order_id} ({o.account} {o.epic} {o.qty:g} {o.status})"
                              for o in unconfirmed[:5])
            more = f" and {len(unconfirmed) - 5} more" if len(unconfirmed) > 5 else ""
            log.warning("event=orders_in_flight_at_stop count=%d orders=%s%s: the broker may still execute them; "
                        "the next start asks it about each", len(unconfirmed), shown, more)

    def _send_shutdown(self, account: str) -> None:
        queue = self.bus.open_worker_queue(account)
        queue.send(to_worker.Shutdown())

    # -- the loop -------------------------------------------------------------------------
    def turn(self, timeout_ms: int = TURN_MS) -> None:
        """Run one loop turn."""
        sentinels = self.supervisor.sentinels()
        if self._poller is None or sentinels.keys() != self._polled_sentinels:
            self._poller = zmq.Poller()
            self._poller.register(self.bus.from_workers.socket, zmq.POLLIN)
            for router in self.bus.routers:
                self._poller.register(router, zmq.POLLIN)
            self._poller.register(self.bus.pub, zmq.POLLIN)
            for fd in sentinels:
                self._poller.register(fd, zmq.POLLIN)
            self._polled_sentinels = set(sentinels)
        ready = self._poller.poll(timeout_ms)
        self.bus.track_subscribers()
        # Group commit: everything this turn journals is one transaction, committed before
        # anything of the turn is dispatched or acknowledged (sockets are only flushed below).
        with self.journal.group():
            self._handle(ready)
        self._deliver_events()
        self.market_data.pace(self.bus.sessions())
        for queue in self.bus.to_workers.values():
            queue.flush()
        for _ in range(self._created):
            failpoint("after_dispatch")
        self._created = 0
        self.bus.flush_clients()
        self.bus.flush_pub()

    def _handle(self, ready: list) -> None:
        """Apply what arrived in one turn: worker messages, client messages, supervision."""
        # Time-boxed: a flooding worker must not keep clients waiting; ZeroMQ's fair queuing
        # across worker connections keeps one worker from starving another.
        budget_end = time.perf_counter() + WORKER_BUDGET_S
        while True:
            batch = self.bus.from_workers.drain(max_frames=1)
            self._on_worker_batch(batch)
            if not batch or time.perf_counter() > budget_end:
                break
        for session in self.bus.gone:
            self._drop_session(session)
        self.bus.gone.clear()
        for session, msg in self.bus.receive_clients():
            self._guard(self._on_client_message, msg, session)
        now = time.monotonic()
        # A worker exit wakes the poll through its sentinel; hangs and due restarts are
        # found on a slower beat.
        if now >= self._next_supervision or any(fd in self._polled_sentinels for fd, _ in ready
                                                if isinstance(fd, int)):
            self._next_supervision = now + SUPERVISION_INTERVAL_S
            for account, event in self.supervisor.check():
                self._on_supervisor_event(account, event)
            self._settle_overdue()
            self._retry_syncs(now)
        for event in self.market_data.check_stale(now):
            self._emit(event)

    def _guard(self, fn, msg: dict, *args) -> None:
        """Handle one inbound message; whatever it holds, refuse it with a reason and go on."""
        try:
            fn(msg, *args)
        except MAOTradeError as exc:
            self._refuse(msg, exc, args)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
            # Shapes we did not expect: the message is malformed. Keep the trace for a developer.
            log.debug("event=message_trace type=%s", msg.get("type"), exc_info=True)
            self._refuse(msg, exc, args)

    def _refuse(self, msg: dict, exc: Exception, args: tuple) -> None:
        # A well-formed request the engine says no to (an unknown account, say) is refused,
        # not malformed: only broken shapes count against the sender.
        if isinstance(exc, ProtocolError) or not isinstance(exc, MAOTradeError):
            self.malformed_worker_messages += 1
        reason = str(exc) if isinstance(exc, MAOTradeError) else f"malformed message ({type(exc).__name__}: {exc})"
        log.warning("event=message_rejected type=%s reason=%s", msg.get("type"), reason)
        if args and isinstance(args[0], ClientSession):
            refusal = message(ToClient.ERROR, reason=reason, request=msg.get("type"))
            if msg.get("request_id") is not None:
                refusal["request_id"] = msg["request_id"]
            args[0].put(refusal)

    # -- workers ----
    def _on_worker_batch(self, batch: list[dict]) -> None:
        """Apply one frame from a worker; bars take a fast path, everything else the general one."""
        now = time.monotonic()
        heard = set()
        for msg in batch:
            kind = msg.get("type")
            if kind == FromWorker.MARKET_DATA_BLOCK or kind == FromWorker.MARKET_DATA:
                try:
                    account = msg["account"]
                    if account not in heard:
                        heard.add(account)
                        self.supervisor.heard_from(account)
                    if kind == FromWorker.MARKET_DATA_BLOCK:
                        self._on_bar_block(self.accounts[account], msg, now)
                    else:
                        self._on_bar(self.accounts[account], msg, now)
                except (KeyError, TypeError, ValueError, ProtocolError) as exc:
                    self._refuse(msg, ProtocolError(f"malformed market data ({type(exc).__name__}: {exc})"), ())
            else:
                self._guard(self._on_worker_message, msg)

    def _on_worker_message(self, msg: dict) -> None:
        account = str(msg.get("account", ""))
        runtime = self.accounts.get(account)
        if runtime is None:
            raise ProtocolError(f"message from unknown account {account!r}")
        self.supervisor.heard_from(account)
        kind = msg["type"]
        if kind in LIVENESS_ONLY:
            return  # any message counts as a heartbeat: heard_from above was the point
        handler = self._worker_table.get(kind)
        if handler is None:
            raise ProtocolError(f"unknown worker message type {kind!r}")
        handler(runtime, msg)

    def _worker_handlers(self) -> dict:
        """Worker message type -> ``handler(runtime, msg)``, built once (bars take the fast path instead)."""
        return {
            FromWorker.ORDER_EVENT: self._on_order_event,
            FromWorker.INIT_RESULT: self._on_init_result,
            FromWorker.CONNECTION: self._on_connection,
            FromWorker.ACCOUNT_INFO: self._on_account_info,
            FromWorker.PORTFOLIO: self._on_portfolio,
            FromWorker.MARKET_DATA_RESPONSE: self._on_market_data_response,
            FromWorker.ACCOUNT_DISCONNECTED:
                lambda runtime, msg: self._set_state(runtime, AccountState.DISCONNECTED, msg.get("reason", "")),
            FromWorker.ERROR: self._on_worker_error,
            **{kind: self.history.on_worker_message for kind in self.history.WORKER_TYPES},
        }

    def _on_init_result(self, runtime: AccountRuntime, msg: dict) -> None:
        runtime.capabilities = msg.get("capabilities") or {}
        runtime.data_frames = msg.get("data_frames") or {}
        self._start_sync(runtime)

    def _on_account_info(self, runtime: AccountRuntime, msg: dict) -> None:
        runtime.account_info = msg.get("info") or {}
        self.journal.record_balance(runtime.account, runtime.account_info)
        self._sync_answered(runtime, "account_info")
        self._broadcast(runtime, message(ToClient.ACCOUNT_INFO, account=runtime.account, info=runtime.account_info))

    def _on_portfolio(self, runtime: AccountRuntime, msg: dict) -> None:
        runtime.broker_portfolio = msg.get("portfolio") or {}
        for position in runtime.broker_portfolio.get("positions", []):
            if position.get("market_price"):
                runtime.last_price.setdefault(position.get("epic"), position["market_price"])
        self._reconcile(runtime)
        self._sync_answered(runtime, "portfolio")
        self._broadcast(runtime, message(ToClient.PORTFOLIO, account=runtime.account,
                                         portfolio=self.portfolio(runtime.account), broker=runtime.broker_portfolio))

    def _on_market_data_response(self, runtime: AccountRuntime, msg: dict) -> None:
        request = msg.get("request") or {}
        self._sync_answered(runtime, f"md:{request.get('epic')}:{request.get('time_frame')}")

    def _on_worker_error(self, runtime: AccountRuntime, msg: dict) -> None:
        log.warning("event=worker_error account=%s reason=%s", runtime.account, msg.get("reason"))
        self._emit(message(ToClient.WORKER_ERROR, account=runtime.account, reason=msg.get("reason")))

    def _on_connection(self, runtime: AccountRuntime, msg: dict) -> None:
        state = msg.get("state")
        if state == "connected":
            if runtime.state in (AccountState.RECONNECTING, AccountState.STARTING):
                self._start_sync(runtime)
        elif state == "reconnecting":
            self._set_state(runtime, AccountState.RECONNECTING, msg.get("reason", ""))
        elif state == "disconnected":
            self._set_state(runtime, AccountState.DISCONNECTED, msg.get("reason", ""))

    def _start_sync(self, runtime: AccountRuntime) -> None:
        """Re-synchronise an account: info, portfolio, open orders, subscriptions; then ready."""
        account = runtime.account
        self._set_state(runtime, AccountState.SYNCING, "synchronising with the broker")
        pending = {"account_info", "portfolio"}
        pending.update(f"order:{order.client_order_id}" for order in self.router.orders_to_query(account))
        pending.update(f"md:{epic}:{time_frame}" for epic, time_frame in self.market_data.streams(account))
        self._ask_sync(runtime, pending)
        self.accounts.begin_sync(runtime, pending)

    def _ask_sync(self, runtime: AccountRuntime, items: set) -> None:
        """Send the worker the requests behind sync ``items`` (asked again when unanswered)."""
        queue = self.bus.open_worker_queue(runtime.account)
        if "account_info" in items:
            queue.put(to_worker.AccountInfoRequest())
        if "portfolio" in items:
            queue.put(to_worker.PortfolioRequest())
        for order in self.router.orders_to_query(runtime.account):
            if f"order:{order.client_order_id}" in items:
                queue.put(to_worker.OrderStatusRequest(order=order.to_wire()))
        for epic, time_frame in self.market_data.streams(runtime.account):
            if f"md:{epic}:{time_frame}" in items:
                queue.put(self.market_data.request(runtime, "subscribe", epic, time_frame))

    def _retry_syncs(self, now: float) -> None:
        """Ask again what a synchronising account's worker has not answered (it may have
        dropped a request: out of the broker's request allowance, a timeout)."""
        for _, runtime in self.accounts.items():
            items = self.accounts.sync_retry_due(runtime, now)
            if items:
                log.info("event=sync_retry account=%s items=%s", runtime.account, ",".join(sorted(items)))
                self._ask_sync(runtime, items)

    def _sync_answered(self, runtime: AccountRuntime, item: str) -> None:
        if self.accounts.sync_answered(runtime, item):
            self._set_state(runtime, AccountState.READY, "")

    def _on_order_event(self, runtime: AccountRuntime, msg: dict) -> None:
        outcome = self.router.apply_event(msg)
        order = outcome.order
        if outcome.fills and runtime.state == AccountState.READY:
            self._refresh_balances(runtime)
        for dispatch in outcome.dispatches:
            self._dispatch(dispatch)
        if msg.get("request") == ToWorker.ORDER_STATUS_REQUEST:
            self._sync_answered(runtime, f"order:{order.client_order_id}")
        self._notify_order(order, outcome, request=msg.get("request"))
        for other in outcome.changed:
            self._notify_order(other, OrderOutcome(order=other))
        if outcome.amended_parent is not None:
            parent = outcome.amended_parent
            self._notify_order(parent, OrderOutcome(order=parent, error=outcome.error), request=ToWorker.ORDER_STOP)

    def _settle_overdue(self) -> None:
        """Orders the broker never answered become UNKNOWN: tell their owners, ask again."""
        for order in self.router.overdue():
            self._notify_order(order, OrderOutcome(order=order, error=order.reason))
            if not self.accounts.not_ready_reason(order.account):
                self._dispatch(self.router.status_query(order))
        for order in self.router.due_rechecks():
            if not self.accounts.not_ready_reason(order.account):
                self._dispatch(self.router.status_query(order))

    def _refresh_balances(self, runtime: AccountRuntime) -> None:
        """Ask for account info after fills, at most once per ``INFO_REFRESH_S``."""
        now = time.monotonic()
        if now >= runtime.info_due:
            runtime.info_due = now + INFO_REFRESH_S
            self.bus.open_worker_queue(runtime.account).put(to_worker.AccountInfoRequest())

    def _on_bar(self, runtime: AccountRuntime, msg: dict, now: float) -> None:
        cleared = self.market_data.on_bar(runtime, msg, now)
        if cleared is not None:
            self._emit(cleared)
        if msg.get("completed") and (self._bars_to_on_event or self.bus.observers):
            self._emit(msg)

    def _on_bar_block(self, runtime: AccountRuntime, msg: dict, now: float) -> None:
        rows, refused = decode_rows(msg["bars"])
        for reason in refused:
            self._refuse(msg, ProtocolError(reason), ())
        if not rows:
            return
        if refused:
            msg = {**msg, "bars": pack_rows(rows)}  # the client gets the good rows only
        cleared = self.market_data.on_block(runtime, msg, rows, now)
        if cleared is not None:
            self._emit(cleared)
        if msg["completed"] and (self._bars_to_on_event or self.bus.observers):
            for bar in bar_maps(msg, rows):
                self._emit(bar)

    def _on_supervisor_event(self, account: str, event: str) -> None:
        runtime = self.accounts[account]
        if event in ("died", "hung", "fatal"):
            self.history.worker_gone(account, f"worker {event}")
        if event in ("died", "hung"):
            self._set_state(runtime, AccountState.RESTARTING, f"worker {event}; restarting")
            # A fresh in_queue: requests queued for the dead worker must not reach the new one.
            self.bus.reset_worker_queue(account)
        elif event == "fatal":
            fatal = self.supervisor.workers[account].fatal_reason
            # Keep what the broker said before it gave up (bad credentials...): that is the why.
            said = runtime.reason if runtime.state == AccountState.DISCONNECTED else ""
            self._set_state(runtime, AccountState.DISCONNECTED, f"{said}; {fatal}" if said else fatal)
        elif event == "restarted":
            self.market_data.worker_restarted(account, time.monotonic())
            self._set_state(runtime, AccountState.STARTING, "worker restarted")

    def _set_state(self, runtime: AccountRuntime, state: str, reason: str) -> None:
        if not self.accounts.set_state(runtime, state, reason):
            return
        log.info("event=account_state account=%s state=%s reason=%r", runtime.account, state, reason)
        if state == AccountState.READY and runtime.capabilities.get("replay"):
            self.market_data.replay.start(runtime.account)
        self._broadcast(runtime, message(ToClient.ACCOUNT_STATUS, account=runtime.account, state=state,
                                         reason=reason, broker=runtime.document.get("brokerName"),
                                         account_info=runtime.account_info if state == AccountState.READY else None))

    # -- reconciliation -------------------------------------------------------------------------
    def _reconcile(self, runtime: AccountRuntime) -> None:
        """Record every difference between the broker's portfolio and the journal."""
        for kind, key, ours, theirs in find_differences(self.journal, runtime.account, runtime.broker_portfolio,
                                                        lambda a, k: self.router.get(a, k) is not None):
            ident = self.journal.record_discrepancy(runtime.account, kind, key, ours, theirs)
            log.warning("event=discrepancy account=%s kind=%s key=%s engine=%s broker=%s id=%s",
                        runtime.account, kind, key, ours, theirs, ident)
            self._broadcast(runtime, message(ToClient.DISCREPANCY, account=runtime.account, id=ident,
                                             kind=kind, key=key, engine=ours, broker=theirs))

    def _on_reconcile_request(self, session: ClientSession, msg: dict) -> None:
        runtime = self.accounts.lookup(msg)
        session.put(message(ToClient.RECONCILE, account=runtime.account,
                            discrepancies=self.journal.discrepancies(runtime.account),
                            audit=self.journal.audit_log(runtime.account)[-50:]))

    def _on_reconcile_action(self, session: ClientSession, msg: dict) -> None:
        runtime = self.accounts.lookup(msg)
        resolved = apply_action(self.journal, runtime.account, int(msg.get("id", -1)), str(msg.get("action")),
                                by=session.name or "client", broker_portfolio=runtime.broker_portfolio)
        session.put(message(ToClient.RECONCILED, account=runtime.account, discrepancy=resolved))
        self._broadcast(runtime, message(ToClient.PORTFOLIO, account=runtime.account,
                                         portfolio=self.portfolio(runtime.account), broker=runtime.broker_portfolio))

    # -- clients ------------------------------------------------------------------------------------
    def _on_client_message(self, msg: dict, session: ClientSession) -> None:
        kind = msg["type"]
        handler = self._client_table.get(kind)
        if handler is None:
            raise ProtocolError(f"unknown client message type {kind!r}")
        session.answering = msg.get("request_id")
        try:
            handler(session, msg)
        finally:
            session.answering = None

    def _client_handlers(self) -> dict:
        """The client message table (type -> handler), built once."""
        return {
            FromClient.HELLO: self._on_hello,
            FromClient.SUBSCRIBE: self._on_subscribe,
            FromClient.UNSUBSCRIBE: self._on_unsubscribe,
            FromClient.ORDER_OPEN: self._on_order_open,
            FromClient.ORDER_CLOSE: self._on_order_close,
            FromClient.ORDER_CANCEL: self._on_order_cancel,
            FromClient.ORDER_STOP: self._on_order_stop,
            FromClient.ACCOUNT_INFO_REQUEST: self._on_account_info_request,
            FromClient.PORTFOLIO_REQUEST: self._on_portfolio_request,
            FromClient.STATUS_REQUEST: lambda s, m: s.put(message(ToClient.STATUS, status=self.status())),
            FromClient.STOP_ENGINE: self._on_stop_engine,
            FromClient.RECONCILE_REQUEST: self._on_reconcile_request,
            FromClient.RECONCILE_ACTION: self._on_reconcile_action,
            FromClient.BYE: self._on_bye,
            FromClient.BAR_ACK: lambda s, m: self.market_data.replay.on_ack(
                s.identity, self.accounts.lookup(m).account, m.get("replay_seq")),
            **{kind: self._replying(handler) for kind, handler in self.ops.client_handlers().items()},
            **self.history.client_handlers(),
        }

    def _replying(self, handler: Handler) -> Callable[[ClientSession, dict], None]:
        """Adapt an operator handler (which returns a ``Reply``) to the client table."""
        def handle(session: ClientSession, msg: dict) -> None:
            reply = handler(session.name, msg)
            for dispatch in reply.dispatch:
                self._dispatch(dispatch)
            for outcome in reply.orders:
                self._notify_order(outcome.order, outcome, session=session)
            for answer in reply.to_client:
                session.put(answer)
            for event in reply.events:
                self._emit(event)
        return handle

    def _on_hello(self, session: ClientSession, msg: dict) -> None:
        session.put(self.clients.hello(session, msg))

    def _on_bye(self, session: ClientSession, msg: dict) -> None:
        self._drop_session(session)

    def _drop_session(self, session: ClientSession) -> None:
        """Forget a client that said goodbye or vanished: its subscriptions and history requests end."""
        self.clients.drop(session)
        self.history.forget_session(session)

    def _on_subscribe(self, session: ClientSession, msg: dict) -> None:
        answer = self.market_data.subscribe(session, msg, time.monotonic())
        if answer is not None:
            session.put(answer)

    def _on_unsubscribe(self, session: ClientSession, msg: dict) -> None:
        runtime = self.accounts.lookup(msg)
        self.market_data.unsubscribe(session, runtime.account, msg.get("epic"), msg.get("time_frame"))

    def _on_order_open(self, session: ClientSession, msg: dict) -> None:
        self.accounts.lookup(msg)
        outcome = self.router.open(msg, source=str(msg.get("source") or "strategy"), strategy=session.name)
        self._after_request(session, outcome)

    def _on_order_close(self, session: ClientSession, msg: dict) -> None:
        self.accounts.lookup(msg)
        outcome = self.router.close(msg, source=str(msg.get("source") or "strategy"), strategy=session.name)
        self._after_request(session, outcome)

    def _on_order_cancel(self, session: ClientSession, msg: dict) -> None:
        runtime = self.accounts.lookup(msg)
        key = str(msg.get("client_order_id"))
        self._order_request(session, runtime, key, FromClient.ORDER_CANCEL,
                            lambda: self.router.cancel(runtime.account, key))

    def _on_order_stop(self, session: ClientSession, msg: dict) -> None:
        runtime = self.accounts.lookup(msg)
        key = str(msg.get("client_order_id"))
        self._order_request(session, runtime, key, FromClient.ORDER_STOP, lambda: self.router.amend_stops(
            runtime.account, key, msg.get("stop_loss"), msg.get("take_profit")))

    def _order_request(self, session: ClientSession, runtime: AccountRuntime, key: str, kind: str,
                       route: Callable[[], OrderOutcome]) -> None:
        """Route a request about an existing order; a refusal is answered as that order with
        ``error``, so the strategy reads it in ``on_order`` like the broker's own answers."""
        try:
            outcome = route()
            self._after_request(session, outcome)
        except InvalidOrder as exc:
            order = self.router.get(runtime.account, key)
            if order is None:
                raise
            self._notify_order(order, OrderOutcome(order=order, error=str(exc), code="invalid_request"),
                               session=session, request=kind)

    def _after_request(self, session: ClientSession, outcome: OrderOutcome) -> None:
        self.router.require_sendable(outcome)
        for dispatch in outcome.dispatches:
            self._dispatch(dispatch)
        if outcome.told_now:
            self._notify_order(outcome.order, outcome, session=session)

    def _dispatch(self, dispatch: Dispatch) -> None:
        queue = self.bus.open_worker_queue(dispatch.account)
        queue.put(dispatch.message())
        if dispatch.kind in CREATING_REQUESTS:
            self._created += 1  # sent, after the turn's commit, by ``turn``

    def _on_account_info_request(self, session: ClientSession, msg: dict) -> None:
        runtime = self.accounts.lookup(msg)
        if runtime.state == AccountState.READY:
            self.bus.open_worker_queue(runtime.account).put(to_worker.AccountInfoRequest())
        session.put(message(ToClient.ACCOUNT_INFO, account=runtime.account, info=runtime.account_info))

    def _on_portfolio_request(self, session: ClientSession, msg: dict) -> None:
        runtime = self.accounts.lookup(msg)
        session.put(message(ToClient.PORTFOLIO, account=runtime.account, portfolio=self.portfolio(runtime.account),
                            broker=runtime.broker_portfolio))

    def _on_stop_engine(self, session: ClientSession, msg: dict) -> None:
        log.info("event=stop_requested by=%s", session.name or "client")
        session.put(message(ToClient.STOPPING))
        self.stop()

    # -- notifications ----------------------------------------------------------------------------------
    def _notify_order(self, order: BaseOrder, outcome: OrderOutcome, session: Optional[ClientSession] = None,
                      request: Optional[str] = None) -> None:
        update = message(ToClient.ORDER, **order_view(order), request=request,
                         error=outcome.error or None, code=outcome.code or None,
                         fills=outcome.fills or [], duplicate=outcome.duplicate or None)
        for target in self.clients.order_targets(self.router.owner(order), session):
            target.put(update)
        self._emit(update)

    def _broadcast(self, runtime: AccountRuntime, msg: dict) -> None:
        for session in self.clients.named():
            session.put(msg)
        self._emit(msg)

    def _emit(self, msg: dict) -> None:
        self.bus.publish(msg)
        if self.on_event is not None:
            # Shown once the turn has committed what it says (at once outside a turn).
            self._undelivered.append(msg)
            if not self.journal.in_group:
                self._deliver_events()

    def _deliver_events(self) -> None:
        events, self._undelivered = self._undelivered, []
        for msg in events:
            try:
                self.on_event(msg)
            except Exception:  # a display problem must never stop trading
                log.exception("event=observer_failed")

    # -- views --------------------------------------------------------------------------------------------
    def portfolio(self, account: str) -> dict:
        """The engine's positions of ``account`` with open P&L at the last known price."""
        return portfolio_view(self.journal, self.router, self.accounts[account])

    def status(self) -> dict:
        """Everything ``maotrade status`` shows."""
        malformed = self.malformed_worker_messages + self.bus.malformed_client_frames + self.bus.from_workers.malformed
        return {**status_view(accounts=self.accounts, journal=self.journal, router=self.router,
                              supervisor=self.supervisor, market_data=self.market_data, sessions=self.bus.sessions(),
                              started=self.started, data_dir=self.data_dir, malformed_messages=malformed),
                **{name: provide() for name, provide in self.status_extras.items()}}
