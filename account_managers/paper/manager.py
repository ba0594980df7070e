"""The paper Account Manager: a simulated broker, and the example broker authors copy.

Everything here is what a real broker needs too: settings validated from brokerConfig,
an init that "connects" and reports account, portfolio and time frames, requests that
return at once and answer through ``send_*``, a periodic ``account_manager_main`` that
streams bars, and a broker-side record (``PaperStore``) that outlives the process.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path

from account_managers.paper.config import PaperAccountSettings, PaperBrokerSettings
from account_managers.paper.market import RandomWalk, synthetic_bars
from account_managers.paper.replay import ReplayFeed
from account_managers.paper.store import PaperStore
from maotrade.account_manager import HISTORY_PART_BARS, BaseAccountManager, InitResult
from maotrade.bars import BarBook, MarketDataRequest
from maotrade.errors import InvalidOrder
from maotrade.matching import Event, PaperBook, Quote
from maotrade.protocol import Message, to_worker
from maotrade.order import (BaseOrder, BracketKind, BrokerOrder, Leg, OrderAction, OrderSource, OrderType,
                            new_client_order_id, split_child_id)

log = logging.getLogger(__name__)

# Time frames as in the MAOTrade specification: seconds -> the broker's name.
DATA_FRAMES = {1: "SECOND", 60: "1MINUTE", 300: "5MINUTE"}
HISTORY_FRAMES = {1: "MINUTE", 5: "MINUTE_5", 60: "HOUR", -1: "DAY"}
ORDER_TEMPLATE = {"order_types": ["MARKET", "LIMIT", "STOP"], "time_in_force": ["GTC", "DAY"],
                  "stop_loss": True, "take_profit": True, "partial_close": True}


class PaperAccountManager(BaseAccountManager):
    """Simulated broker: random-walk prices, bars, fills at bid/ask, working orders."""

    settings_model = PaperBrokerSettings
    account_settings_model = PaperAccountSettings
    CAPABILITIES = {"order_types": ["MARKET", "LIMIT", "STOP"], "cancel": True,
                    "stop_amend": True, "partial_close": True, "market_data": True,
                    "bracket": BracketKind.ATTACHED}

    def __init__(self, config, in_queue, out_queue):
        super().__init__(config, in_queue, out_queue)
        self.walks: dict[str, RandomWalk] = {}
        self.bars = BarBook()
        self.book: PaperBook | None = None
        self.store: PaperStore | None = None
        self.replay: ReplayFeed | None = None
        self._next_step_ms = 0
        self._history_jobs: deque[dict] = deque()
        # epic -> epoch ms of its last price step: instruments nobody watches are not stepped
        # on the timer, only caught up (in one draw) when an order or a request needs them.
        self._stepped_at: dict[str, int] = {}
        self._timer_epics: set[str] = set()  # the instruments the last timer step moved
        # What this turn changed, written in one commit before the turn's messages go out.
        self._unsaved: dict[int, BaseOrder] = {}
        self._unsaved_replay: dict | None = None
        self._dirty = False

    # -- lifecycle ----------------------------------------------------------------
    def on_account_manager_init(self) -> InitResult:
        """Open the broker-side record and start the price simulation."""
        s, a = self.settings, self.account_settings
        if self.store is None:
            self.store = PaperStore(self._state_path())
        self.book = PaperBook(balance=a.initial_balance, commission_rate=s.commission,
                              margin_rate=s.margin_rate, account=self.account_id)
        self.orders.update(self.store.load(self.book))
        last_prices = self.store.load_prices()
        for epic, start in s.instruments.items():
            if epic == s.replay_epic:
                continue
            self.walks[epic] = RandomWalk(epic, last_prices.get(epic, start), s.seed, s.volatility, s.spread)
            self._stepped_at[epic] = int(time.time() * 1000)
            self.book.quotes[epic] = Quote(self.walks[epic].bid, self.walks[epic].ask, 0)
        data_frames = DATA_FRAMES
        if s.replay_file:
            data_frames = self._start_replay()
        log.info("event=paper_connected account=%s instruments=%d balance=%.2f",
                 self.account_id, len(self.walks), self.book.balance)
        return (True, self._account_info(), self._portfolio(), ORDER_TEMPLATE,
                HISTORY_FRAMES, data_frames)

    def _start_replay(self) -> dict:
        s = self.settings
        self.replay = ReplayFeed(s.replay_file, self.to_maotrade_epic(s.replay_epic), s.replay_time_frame,
                                 self.store.load_replay())
        self.book.bar_epics = {s.replay_epic}
        self.book.slippage = s.replay_slippage
        if self.replay.last_close is not None:
            close = self.replay.last_close
            self.book.quotes[s.replay_epic] = Quote(close, close, self.replay.bars[self.replay.cursor - 1]["date"])
        self.CAPABILITIES = {**type(self).CAPABILITIES, "replay": True}
        log.info("event=paper_replay account=%s file=%s bars=%d from=%d", self.account_id, s.replay_file,
                 len(self.replay.bars), self.replay.cursor)
        return {s.replay_time_frame: "REPLAY"}

    def handle_message(self, msg: Message) -> bool:
        """``replay_advance``: the engine lets a replaying account send its next bar."""
        if not isinstance(msg, to_worker.ReplayAdvance):
            return False
        if self.replay is not None:
            self.replay.credit = True
            self._replay_step()
        return True

    def _replay_step(self) -> None:
        replay = self.replay
        was_finished = replay.finished
        bar = replay.next_bar()
        if bar is None:
            if replay.finished and not was_finished:
                self._save([], replay=replay.state())
                log.info("event=paper_replay_finished account=%s bars=%d", self.account_id, len(replay.bars))
            return
        events = self.book.on_bar(self.settings.replay_epic, bar, self._make_stop_close)
        # The bar is only sent once its fills and the new position are on record.
        self._publish(events, replay=replay.state())
        self.send_realtime_data({**bar, "replay_seq": replay.cursor - 1})

    def on_account_manager_shutdown(self) -> None:
        """Remember the last prices and close the record."""
        if self.store is not None:
            self.before_send()
            self._catch_up_all(int(time.time() * 1000))
            self.store.save_prices({e: w.mid for e, w in self.walks.items()})
            self.store.close()
            self.store = None

    def do_reconnect(self) -> bool:
        """Reconnect, unless the simulated outage goes on."""
        if self._in_outage():
            return False
        return super().do_reconnect()

    def _in_outage(self) -> bool:
        return bool(self.settings.outage_file) and os.path.exists(self.settings.outage_file)

    def account_manager_main(self, time_now: int) -> None:
        """Step prices on schedule, run triggered orders, stream bars."""
        if self._in_outage():
            self.connection_lost("simulated outage (outage_file exists)")
            return
        if self.replay is not None:
            self._replay_step()
        if self._history_jobs:
            self._history_step(time_now)
        if time_now < self._next_step_ms:
            return
        self._next_step_ms = time_now + int(self.settings.price_interval * 1000)
        events: list[Event] = []
        watched = self._watched_epics()
        for epic in watched:
            walk = self.walks[epic]
            self._catch_up(epic, time_now - self._interval_ms())  # steps missed while nobody watched
            walk.step()
            self._stepped_at[epic] = time_now
            quote = Quote(walk.bid, walk.ask, time_now)
            events += self.book.on_quote(epic, quote, self._make_stop_close)
            for bar in self.bars.on_price(epic, time_now, walk.mid):
                self.send_realtime_data(bar)
        self._timer_epics = set(watched)
        for bar in self.bars.close_due(time_now):
            self.send_realtime_data(bar)
        if events:
            self._publish(events)

    def longest_wait(self) -> float:
        """Sleep until the next price step while anything is watched; an idle account
        (no subscription, working order or stop) wakes only for heartbeats and requests."""
        s = self.settings
        if s.outage_file or self.replay is not None or self._history_jobs:
            return s.tick_interval
        book = self.book
        if book.working or book.stops or next(iter(self.bars), None) is not None:
            return max(0.0, self._next_step_ms / 1000 - time.time())
        return s.reconnect_max

    def _watched_epics(self) -> list[str]:
        """Instruments whose every price step matters: subscribed, or with a working order or
        a position's stop loss / take profit to trigger."""
        book = self.book
        watched = {epic for epic, _ in self.bars}
        watched.update(order.epicBroker for order in book.working.values())
        watched.update(epic for epic, stops in book.stops.items()
                       if stops.get("stop_loss") is not None or stops.get("take_profit") is not None)
        return [epic for epic in self.walks if epic in watched]

    def _interval_ms(self) -> int:
        return max(1, int(self.settings.price_interval * 1000))

    def _catch_up(self, epic: str, time_now: int) -> None:
        """Move an instrument's price by the steps it missed up to ``time_now`` (one draw)."""
        walk = self.walks.get(epic)
        if walk is None or epic in self._timer_epics:
            return  # stepped on the timer: never moved twice
        last = self._stepped_at.setdefault(epic, time_now)
        missed = (time_now - last) // self._interval_ms()
        if missed <= 0:
            return
        walk.advance(missed)
        self._stepped_at[epic] = last + missed * self._interval_ms()
        self.book.quotes[epic] = Quote(walk.bid, walk.ask, time_now)

    def _catch_up_all(self, time_now: int) -> None:
        for epic in self.walks:
            self._catch_up(epic, time_now)

    # -- requests -----------------------------------------------------------------
    def do_async_request_account_info(self) -> None:
        """Answer at once: the book is local."""
        self._catch_up_all(int(time.time() * 1000))
        self.send_account_info(self._account_info())

    def do_async_request_portfolio(self) -> None:
        """Answer at once with positions and working orders."""
        self._catch_up_all(int(time.time() * 1000))
        self.send_portfolio(self._portfolio())

    def do_async_request_market_data(self, request: dict) -> bool:
        """Start or stop bars of ``request["epic"]`` at ``request["time_frame"]`` seconds."""
        wanted = MarketDataRequest(request)
        if self.replay is not None and wanted.epic_broker == self.settings.replay_epic:
            if wanted.time_frame != self.settings.replay_time_frame:
                raise InvalidOrder(f"{wanted.epic} is replayed at {self.settings.replay_time_frame}s "
                                   f"only, not {wanted.time_frame}s")
            self.replay.subscribed = wanted.subscribe
            self._replay_step()
            return True
        if wanted.epic_broker not in self.walks:
            raise InvalidOrder(f"unknown instrument {wanted.epic!r}: paper broker has no prices for it")
        if wanted.time_frame not in DATA_FRAMES:
            raise InvalidOrder(f"time frame {wanted.time_frame}s not offered; choose one of {sorted(DATA_FRAMES)}")
        if not wanted.subscribe:
            return self.bars.unsubscribe(wanted.epic_broker, wanted.time_frame)
        self.bars.subscribe(wanted.epic or self.to_maotrade_epic(wanted.epic_broker), wanted.epic_broker,
                            wanted.time_frame)
        return True

    def do_async_request_history(self, request: dict) -> None:
        """Synthesise the requested bars (deterministic: the same date, the same bar), one
        part per loop turn so that a long history never holds up orders."""
        if request["epicBroker"] not in self.settings.instruments:
            self.send_history_error(request["request_id"], f"paper broker has no instrument "
                                                           f"{request['epicBroker']!r}")
            return
        self._history_jobs.append({**request, "cursor": request["start"]})
        self.wake_soon()

    def _history_step(self, time_now: int) -> None:
        job = self._history_jobs[0]
        span = job["time_frame"] * 1000
        # Only completed bars: the last one must have ended by now.
        end = min(job["end"], (time_now // span) * span)
        bars = synthetic_bars(job["epicBroker"], self.settings.instruments[job["epicBroker"]],
                              self.settings.seed, job["time_frame"], job["cursor"], end, HISTORY_PART_BARS)
        for bar in bars:
            bar["epic"] = job["epic"]
        part_end = bars[-1]["date"] + span if len(bars) == HISTORY_PART_BARS else max(end, job["cursor"])
        done = part_end >= end
        self.send_history(job["request_id"], bars, done=done, start=job["cursor"], end=part_end)
        job["cursor"] = part_end
        if done:
            self._history_jobs.popleft()
        self.wake_soon()

    def do_async_request_order_open(self, order: BaseOrder) -> None:
        """Match a new order against the current quote."""
        self._execute(order, lambda: self.book.submit(order))

    def do_async_request_order_close(self, order: BaseOrder) -> None:
        """Close all or part of the position at market."""
        self._execute(order, lambda: self.book.close(order))

    def do_async_request_stop_order(self, order: BaseOrder) -> None:
        """Amend stop loss / take profit of a working order or of the position."""
        self._catch_up(order.epicBroker, int(time.time() * 1000))
        try:
            self.book.amend_stops(order.epicBroker, order.stop_loss,
                                  order.take_profit, order.client_order_id)
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc), kind=to_worker.OrderStop.TYPE)
            return
        self._save([order])
        self.send_request_order_response(order, kind=to_worker.OrderStop.TYPE)

    def do_async_request_order_cancel(self, order: BaseOrder) -> None:
        """Cancel a working order (a bracket leg: take its level off the position)."""
        if order.is_leg:
            self._withdraw_leg(order)
            return
        try:
            cancelled = self.book.cancel(order.client_order_id)
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc), kind=to_worker.OrderCancel.TYPE)
            return
        self._save([cancelled])
        self.send_request_order_response(cancelled, kind=to_worker.OrderCancel.TYPE)

    def do_async_request_order_status(self, order: BaseOrder) -> None:
        """Answer from the broker-side record, as a real broker would."""
        known = self.orders.get(order.client_order_id)
        if known is not None and known.broker_ref:
            self.send_order_status(known)
        elif order.is_leg and self._leg_working(order):
            order.set_accepted()
            self.send_order_status(order)
        else:
            self.send_order_not_found(order)

    def _leg_working(self, leg: BaseOrder) -> bool:
        stops = self.book.stops.get(leg.epicBroker, {})
        level = stops.get("stop_loss" if leg.leg == Leg.STOP_LOSS else "take_profit")
        return stops.get("parent") == leg.parent and level is not None

    def _withdraw_leg(self, leg: BaseOrder) -> None:
        stops = self.book.stops.get(leg.epicBroker)
        if stops is not None and self._leg_working(leg):
            stops["stop_loss" if leg.leg == Leg.STOP_LOSS else "take_profit"] = None
            self._save([])
        leg.set_cancelled("cancelled by request")
        self.send_request_order_response(leg, kind=to_worker.OrderCancel.TYPE)

    # -- internals ------------------------------------------------------------------
    def _execute(self, order: BaseOrder, action) -> None:
        if order.epicBroker and order.epicBroker not in self.walks and order.epicBroker not in self.book.bar_epics:
            self.send_order_refused(order, f"unknown instrument {order.epic!r}")
            return
        epic = order.epicBroker or order.epic
        self._catch_up(epic, int(time.time() * 1000))
        quote = self.book.quotes.get(epic)
        if quote is not None and epic in self.walks:
            # The latest quote still stands now: an order that trades on it trades now, never
            # at the (earlier) moment the quote was made.
            quote.time = max(quote.time, int(time.time() * 1000))
        try:
            events = action()
        except InvalidOrder as exc:
            self.send_order_refused(order, str(exc))
            return
        self._publish(events)

    def _publish(self, events: list[Event], replay: dict | None = None) -> None:
        self._save([e.order for e in events], replay)
        for event in events:
            self.orders[event.order.client_order_id] = event.order
            self.send_request_order_response(event.order, event.fill)

    def _save(self, orders, replay: dict | None = None) -> None:
        """Mark the book and ``orders`` for the turn's one commit (``before_send``)."""
        self._dirty = True
        for order in orders:
            self._unsaved[id(order)] = order
        if replay is not None:
            self._unsaved_replay = replay

    def before_send(self) -> None:
        """Write what this turn changed in one transaction, before any of it is reported:
        a crash in between makes the engine ask, and the answer comes from this record."""
        if not self._dirty or self.store is None:
            return
        self.store.save(self.book, list(self._unsaved.values()), replay=self._unsaved_replay)
        self._unsaved.clear()
        self._unsaved_replay = None
        self._dirty = False

    def _make_stop_close(self, epic: str, qty: float, reason: str, client_order_id: str) -> BaseOrder:
        parent, leg = split_child_id(client_order_id)
        order = BrokerOrder(client_order_id=client_order_id or new_client_order_id("pb"),
                            account=self.account_id, epic=self.to_maotrade_epic(epic), epicBroker=epic,
                            qty=qty, order_type=OrderType.MARKET, action=OrderAction.CLOSE,
                            source=OrderSource.BRACKET if leg else OrderSource.EXTERNAL, reason=reason,
                            parent=parent if leg else "", leg=leg)
        self.orders[order.client_order_id] = order
        return order

    def _account_info(self) -> dict:
        return self.book.account_info(self.account_settings.currency)

    def _portfolio(self) -> dict:
        return self.book.portfolio(self.to_maotrade_epic)

    def _state_path(self) -> Path:
        if self.settings.state_file:
            return Path(self.settings.state_file)
        data_dir = Path(self.runtime.get("data_dir") or ".")
        return data_dir / "paper" / f"account-{self.account_id}.sqlite"

