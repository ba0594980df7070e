"""The ib_insync connection, run on an asyncio loop in a thread of its own.

ib_insync is asyncio-based and its convenience calls (``IB.connect``, ``IB.sleep``)
run the event loop until they finish, which would stall the Account Manager's zmq
loop. So every ib_insync call runs on a private asyncio loop in a dedicated thread;
the manager submits work with ``call`` (a ``concurrent.futures.Future`` comes back)
and receives ib_insync's events as plain dicts through ``on_event``, which it hands
to its own loop with ``call_soon_threadsafe``. Nothing in this module touches the
queues or the orders: it is the transport only.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import logging
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ib_insync import IB, Contract, ExecutionFilter, Order

from account_managers.ib.parsing import (CLIENT_ID_IN_USE, HISTORY_ERROR_CODES, NO_DATA_TEXT, ContractSpec,
                                         OrderParams)
from maotrade.errors import BrokerUnavailable, MAOTradeError, TemporaryError

log = logging.getLogger(__name__)


class ClientIdInUse(TemporaryError):
    """TWS refused the clientId because another connection holds it (error 326)."""


class HistoryRefused(MAOTradeError):
    """IB refused a historical data request (pacing, permissions, no such data); not retried."""


def _ms(moment) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp() * 1000)
    return 0


def to_contract(spec: ContractSpec) -> Contract:
    """An ib_insync contract from an epic mapping entry."""
    return Contract(symbol=spec.symbol, secType=spec.sec_type, exchange=spec.exchange,
                    currency=spec.currency, lastTradeDateOrContractMonth=spec.expiry)


def trade_dict(trade) -> dict:
    """The facts of one ib_insync Trade the manager reasons about."""
    code, message = 0, ""
    for entry in reversed(trade.log):
        if entry.errorCode:
            code, message = entry.errorCode, entry.message
            break
    order, status = trade.order, trade.orderStatus
    return {"order_ref": order.orderRef or "", "order_id": order.orderId, "perm_id": order.permId,
            "parent_id": order.parentId, "status": status.status, "filled": status.filled,
            "remaining": status.remaining, "avg_price": status.avgFillPrice,
            "error_code": code, "message": message, "action": order.action,
            "quantity": order.totalQuantity, "order_type": order.orderType,
            "symbol": trade.contract.symbol}


def fill_dict(fill, commission_source=None) -> dict:
    """One execution as a plain dict; commission is None until IB reported it."""
    ex = fill.execution
    report = (commission_source or fill).commissionReport
    has_commission = bool(report.execId) or report.commission != 0
    return {"exec_id": ex.execId, "order_ref": ex.orderRef or "", "order_id": ex.orderId,
            "perm_id": ex.permId, "shares": float(ex.shares), "price": float(ex.price),
            "side": ex.side, "time_ms": _ms(ex.time) or _ms(fill.time),
            "commission": float(report.commission) if has_commission else None}


def _disconnect(ib: IB) -> None:
    try:
        ib.disconnect()
    except ConnectionError:
        pass  # half-open (handshake done, API not ready): ib_insync cannot report stats


async def _abandon(ib: IB, task: asyncio.Future) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    _disconnect(ib)


class IBSession:
    """One TWS API connection on a private asyncio loop thread."""

    _ids = itertools.count(1)

    def __init__(self, on_event: Callable[[dict], None], max_requests_per_second: int = 45):
        self._on_event = on_event
        self._max_requests = max_requests_per_second
        self.ib: Optional[IB] = None
        self.closed = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ib-session-{next(self._ids)}")
        self._thread.start()

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def call(self, fn: Callable, *args: Any) -> concurrent.futures.Future:
        """Run ``fn(*args)`` on the IB thread (awaiting it if it is async)."""
        async def runner():
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(runner(), self.loop)

    def _emit(self, event: dict) -> None:
        if not self.closed:
            self._on_event(event)

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect and stop the thread; events stop at once."""
        if self.closed:
            return
        self.closed = True

        def stop():
            if self.ib is not None:
                _disconnect(self.ib)
            self.loop.call_soon(self.loop.stop)
        try:
            self.loop.call_soon_threadsafe(stop)
        except RuntimeError:
            return  # the loop is gone already
        self._thread.join(timeout)

    # ------------------------------------------------------------------ connect
    def connect(self, host: str, port: int, client_id: int, timeout: float,
                specs: dict[str, ContractSpec], executions_since_ms: int = 0) -> dict:
        """Connect, synchronize and qualify contracts; block until done (init only).

        Returns ``{accounts, trades, fills, contracts, unknown}``.
        """
        future = self.call(self._connect, host, port, client_id, timeout, specs, executions_since_ms)
        try:
            return future.result(timeout * 3 + 5)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrokerUnavailable(f"TWS at {host}:{port} did not finish connecting "
                                    f"within {timeout * 3 + 5:g}s") from None

    async def _connect(self, host, port, client_id, timeout, specs, since_ms) -> dict:
        ib = IB()
        ib.client.MaxRequests = self._max_requests
        in_use = asyncio.get_running_loop().create_future()

        def early_error(req_id, code, message, contract):
            if code == CLIENT_ID_IN_USE and not in_use.done():
                in_use.set_result(message)
        ib.errorEvent += early_error
        task = asyncio.ensure_future(ib.connectAsync(host, port, client_id, timeout))
        done, _ = await asyncio.wait({task, in_use}, timeout=timeout * 2,
                                     return_when=asyncio.FIRST_COMPLETED)
        if in_use in done:
            await _abandon(ib, task)
            raise ClientIdInUse(f"clientId {client_id} is already in use at {host}:{port}; "
                                f"set a unique brokerConfig client_id (TWS: {in_use.result()})")
        if task not in done:
            await _abandon(ib, task)
            raise BrokerUnavailable(f"TWS at {host}:{port} did not answer within {timeout * 2:g}s")
        try:
            task.result()
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            raise BrokerUnavailable(f"cannot connect to TWS at {host}:{port}: "
                                    f"{type(exc).__name__}: {exc}") from None
        ib.errorEvent -= early_error
        self.ib = ib
        self._attach(ib)
        contracts, unknown = {}, {}
        for epic_broker, spec in specs.items():
            contract = to_contract(spec)
            details = await asyncio.wait_for(ib.reqContractDetailsAsync(contract), timeout)
            if len(details) == 1:
                found = details[0].contract
                contract.conId = found.conId
                contract.multiplier = found.multiplier
                contract.localSymbol = found.localSymbol
                contract.tradingClass = found.tradingClass
                contracts[epic_broker] = contract
            else:
                unknown[epic_broker] = ("IB has no security definition for it" if not details
                                        else f"IB finds {len(details)} contracts for it")
        fills = list(ib.fills())
        if since_ms:
            since = datetime.fromtimestamp(since_ms / 1000 - 1, timezone.utc)
            recent = await asyncio.wait_for(
                ib.reqExecutionsAsync(ExecutionFilter(time=since.strftime("%Y%m%d %H:%M:%S UTC"))),
                timeout)
            known = {f.execution.execId for f in recent}
            fills = recent + [f for f in fills if f.execution.execId not in known]
        by_id = ib.wrapper.fills
        return {"accounts": list(ib.managedAccounts()),
                "trades": [trade_dict(t) for t in ib.trades()],
                "fills": [fill_dict(f, by_id.get(f.execution.execId)) for f in fills],
                "contracts": contracts, "unknown": unknown}

    def _attach(self, ib: IB) -> None:
        ib.orderStatusEvent += lambda trade: self._emit({"event": "status", **trade_dict(trade)})
        ib.execDetailsEvent += lambda trade, fill: self._emit({"event": "exec", **fill_dict(fill)})
        ib.commissionReportEvent += lambda trade, fill, report: self._emit(
            {"event": "commission", "exec_id": report.execId, "commission": float(report.commission)})
        ib.errorEvent += lambda req_id, code, message, contract: self._emit(
            {"event": "error", "req_id": req_id, "code": code, "message": message})
        ib.disconnectedEvent += lambda: self._emit({"event": "disconnected"})

    # ------------------------------------------------------------------ orders
    def place(self, contract: Contract, params: OrderParams, parent_id: int = 0,
              transmit: bool = True, oca_group: str = "") -> int:
        """Place one order (IB thread); return its IB orderId."""
        order = Order(action=params.action, totalQuantity=params.quantity,
                      orderType=params.order_type, tif=params.tif, orderRef=params.order_ref,
                      transmit=transmit, parentId=parent_id, ocaGroup=oca_group,
                      ocaType=1 if oca_group else 0)
        if params.limit_price is not None:
            order.lmtPrice = params.limit_price
        if params.stop_price is not None:
            order.auxPrice = params.stop_price
        order.orderId = self.ib.client.getReqId()
        self.ib.placeOrder(contract, order)
        return order.orderId

    def place_bracket(self, contract: Contract, parent: OrderParams,
                      children: list[OrderParams]) -> list[int]:
        """Place a parent and its stop-loss / take-profit children in one OCA group."""
        parent_id = self.place(contract, parent, transmit=not children)
        ids = [parent_id]
        oca = f"oca-{parent.order_ref}"
        for i, child in enumerate(children):
            ids.append(self.place(contract, child, parent_id=parent_id,
                                  transmit=i == len(children) - 1, oca_group=oca))
        return ids

    def open_trade(self, order_ref: str):
        """The working ib_insync Trade carrying ``order_ref``, or None."""
        for trade in self.ib.openTrades():
            if trade.order.orderRef == order_ref:
                return trade
        return None

    def modify(self, order_ref: str, stop_price: Optional[float] = None,
               limit_price: Optional[float] = None) -> bool:
        """Change the stop or limit price of a working order; False if none works."""
        trade = self.open_trade(order_ref)
        if trade is None:
            return False
        if stop_price is not None:
            trade.order.auxPrice = stop_price
        if limit_price is not None:
            trade.order.lmtPrice = limit_price
        # a bracket child was placed with transmit=0; a change sent that way would wait
        # in TWS untransmitted
        trade.order.transmit = True
        self.ib.placeOrder(trade.contract, trade.order)
        return True

    def cancel(self, order_ref: str) -> bool:
        """Cancel the working order carrying ``order_ref``; False if none works."""
        trade = self.open_trade(order_ref)
        if trade is None:
            return False
        self.ib.cancelOrder(trade.order)
        return True

    def lookup(self, order_ref: str) -> dict:
        """Every trade and fill IB reported for ``order_ref`` in this session."""
        trades = [trade_dict(t) for t in self.ib.trades() if t.order.orderRef == order_ref]
        fills = [fill_dict(f) for f in self.ib.fills() if f.execution.orderRef == order_ref]
        return {"trades": trades, "fills": fills}

    # ------------------------------------------------------------------ account
    def account_snapshot(self, account: str) -> dict:
        """Cached account values and portfolio rows of ``account`` (kept live by TWS)."""
        values = [(v.tag, v.value, v.currency) for v in self.ib.accountValues(account)]
        rows = [{"symbol": p.contract.symbol, "currency": p.contract.currency,
                 "sec_type": p.contract.secType,
                 "expiry": p.contract.lastTradeDateOrContractMonth,
                 "multiplier": p.contract.multiplier, "qty": p.position,
                 "avg_cost": p.averageCost, "market_price": p.marketPrice,
                 "unrealized": p.unrealizedPNL, "realized": p.realizedPNL}
                for p in self.ib.portfolio(account)]
        return {"values": values, "portfolio": rows}

    # ------------------------------------------------------------------ market data
    def subscribe_bars(self, contract: Contract, key: tuple, what_to_show: str, use_rth: bool):
        """Start 5-second real-time bars; each new bar is emitted as a ``bar`` event."""
        bars = self.ib.reqRealTimeBars(contract, 5, what_to_show, use_rth)

        def on_update(bar_list, has_new_bar):
            if has_new_bar and bar_list:
                bar = bar_list[-1]
                self._emit({"event": "bar", "key": key, "time_ms": _ms(bar.time),
                            "open": bar.open_, "high": bar.high, "low": bar.low,
                            "close": bar.close, "volume": bar.volume})
        bars.updateEvent += on_update
        return bars

    def subscribe_ticks(self, contract: Contract, key: tuple):
        """Start streaming ticks; each update is emitted as a ``tick`` event."""
        ticker = self.ib.reqMktData(contract, "", False, False)

        def on_update(t):
            price = t.last if t.last == t.last and t.last > 0 else t.midpoint()
            if price == price and price > 0:
                size = t.lastSize if t.lastSize == t.lastSize else 0.0
                self._emit({"event": "tick", "key": key, "time_ms": _ms(t.time), "price": price,
                            "size": size, "bid": t.bid, "ask": t.ask})
        ticker.updateEvent += on_update
        return ticker

    def unsubscribe(self, kind: str, handle) -> None:
        """Stop a stream started by ``subscribe_bars`` or ``subscribe_ticks``."""
        if kind == "bars":
            self.ib.cancelRealTimeBars(handle)
        else:
            self.ib.cancelMktData(handle.contract)

    async def history(self, contract: Contract, bar_size: str, duration: str, what_to_show: str,
                      use_rth: bool, timeout: float) -> list[dict]:
        """Historical bars, oldest first, with their start in epoch ms."""
        bars = await self.ib.reqHistoricalDataAsync(contract, "", duration, bar_size, what_to_show,
                                                    use_rth, formatDate=2, timeout=timeout)
        out = []
        for bar in bars:
            date = bar.date
            if not isinstance(date, datetime):
                date = datetime(date.year, date.month, date.day, tzinfo=timezone.utc)
            out.append({"time_ms": _ms(date), "open": bar.open, "high": bar.high, "low": bar.low,
                        "close": bar.close, "volume": bar.volume})
        return out

    async def history_range(self, contract: Contract, end_ms: int, duration: str, bar_size: str,
                            what_to_show: str, use_rth: bool, timeout: float) -> list[dict]:
        """Historical bars reaching back ``duration`` from ``end_ms``, oldest first.

        ib_insync ends a refused request with an empty list, like a request with no data;
        IB's error for this contract tells them apart: "returned no data" is an empty
        span, anything else (pacing, permissions) raises ``HistoryRefused``.
        """
        refusals: list[str] = []

        def on_error(req_id, code, message, err_contract):
            ours = err_contract is not None and err_contract.conId == contract.conId
            if ours and code in HISTORY_ERROR_CODES and NO_DATA_TEXT not in message:
                refusals.append(f"IB {code}: {message}")

        end = datetime.fromtimestamp(end_ms / 1000, timezone.utc)
        self.ib.errorEvent += on_error
        try:
            bars = await asyncio.wait_for(self.ib.reqHistoricalDataAsync(
                contract, end, duration, bar_size, what_to_show, use_rth, formatDate=2), timeout)
        except asyncio.TimeoutError:
            raise HistoryRefused(f"IB sent no history within {timeout:g}s") from None
        finally:
            self.ib.errorEvent -= on_error
        if refusals:
            raise HistoryRefused(refusals[0])
        out = []
        for bar in bars:
            date = bar.date
            if not isinstance(date, datetime):
                date = datetime(date.year, date.month, date.day, tzinfo=timezone.utc)
            out.append({"time_ms": _ms(date), "open": bar.open, "high": bar.high, "low": bar.low,
                        "close": bar.close, "volume": bar.volume})
        return out
