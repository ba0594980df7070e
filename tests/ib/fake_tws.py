"""A fake TWS / IB Gateway that speaks the TWS API socket protocol.

It is good enough for the real, unmodified ib_insync client: the ``API\\0`` handshake
with a version range, server version and connection time, ``startApi``, then
length-prefixed, NUL-separated messages identified by their message id. It keeps a
small broker: instruments, an account with cash and positions, orders per clientId
(market, limit, stop, parent/child brackets, OCA groups), executions with commission
reports, account and portfolio updates, ticks, 5-second real-time bars and
historical bars (ending at ``endDateTime``, deterministic, with IB's pacing rule of six
requests in two seconds and its "no data" answer), IB's error codes (200, 201, 202, 326, 162, connectivity and farm
codes), dropped connections and a duplicate clientId.

Tests drive it through thread-safe helpers (``set_price``, ``fill``, ``drop_clients``,
``send_error``); by hand it runs with ``python -m tests.ib.fake_tws --port 7497``.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import math
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

log = logging.getLogger("fake_tws")

SERVER_VERSION = 157  # the lowest version ib_insync 0.9.86 accepts; fewest fields
ACCOUNT = "DU123456"
UNSET_DOUBLE = 1.7976931348623157e308
MAX_HISTORY_BARS = 2000  # a longer request is refused as IB refuses one past its duration limits


# Incoming message ids (client -> TWS), as sent by ib_insync's client.py.
REQ_MKT_DATA, CANCEL_MKT_DATA, PLACE_ORDER, CANCEL_ORDER, REQ_OPEN_ORDERS = 1, 2, 3, 4, 5
REQ_ACCT_UPDATES, REQ_EXECUTIONS, REQ_IDS, REQ_CONTRACT_DETAILS = 6, 7, 8, 9
REQ_AUTO_OPEN_ORDERS, REQ_ALL_OPEN_ORDERS, REQ_HISTORICAL_DATA, CANCEL_HISTORICAL_DATA = 15, 16, 20, 25
REQ_CURRENT_TIME, REQ_REAL_TIME_BARS, CANCEL_REAL_TIME_BARS = 49, 50, 51
REQ_MARKET_DATA_TYPE, REQ_POSITIONS, START_API, REQ_ACCT_UPDATES_MULTI = 59, 61, 71, 76
CANCEL_ACCT_UPDATES_MULTI, REQ_COMPLETED_ORDERS = 77, 99

# Outgoing message ids (TWS -> client), as decoded by ib_insync's decoder.py.
TICK_PRICE, TICK_SIZE, ORDER_STATUS, ERR_MSG, OPEN_ORDER, ACCT_VALUE, PORTFOLIO_VALUE = 1, 2, 3, 4, 5, 6, 7
ACCT_UPDATE_TIME, NEXT_VALID_ID, CONTRACT_DATA, EXECUTION_DATA, MANAGED_ACCTS = 8, 9, 10, 11, 15
HISTORICAL_DATA, CURRENT_TIME, REAL_TIME_BARS, CONTRACT_DATA_END, OPEN_ORDER_END = 17, 49, 50, 52, 53
ACCT_DOWNLOAD_END, EXECUTION_DATA_END, COMMISSION_REPORT, POSITION_DATA, POSITION_END = 54, 55, 59, 61, 62
ACCOUNT_UPDATE_MULTI, ACCOUNT_UPDATE_MULTI_END, COMPLETED_ORDER, COMPLETED_ORDERS_END = 73, 74, 101, 102

# Field order of openOrder and completedOrder after the contract, as ib_insync's
# decoder reads them at server version 157 (no delta-neutral, combo, scale, algo or
# condition sections; the "num*" and "dncPresent" counts are sent as 0).
_ORDER_COMMON = ["action", "totalQuantity", "orderType", "lmtPrice", "auxPrice", "tif",
                 "ocaGroup", "account", "openClose", "origin", "orderRef"]
OPEN_ORDER_FIELDS = _ORDER_COMMON + [
    "clientId", "permId", "outsideRth", "hidden", "discretionaryAmt", "goodAfterTime",
    "sharesAllocation", "faGroup", "faMethod", "faPercentage", "faProfile", "modelCode",
    "goodTillDate", "rule80A", "percentOffset", "settlingFirm", "shortSaleSlot",
    "designatedLocation", "exemptCode", "auctionStrategy", "startingPrice", "stockRefPrice",
    "delta", "stockRangeLower", "stockRangeUpper", "displaySize", "blockOrder", "sweepToFill",
    "allOrNone", "minQty", "ocaType", "eTradeOnly", "firmQuoteOnly", "nbboPriceCap", "parentId",
    "triggerMethod", "volatility", "volatilityType", "deltaNeutralOrderType",
    "deltaNeutralAuxPrice", "continuousUpdate", "referencePriceType", "trailStopPrice",
    "trailingPercent", "basisPoints", "basisPointsType", "comboLegsDescrip", "numLegs",
    "numOrderLegs", "numParams", "scaleInitLevelSize", "scaleSubsLevelSize",
    "scalePriceIncrement", "hedgeType", "optOutSmartRouting", "clearingAccount",
    "clearingIntent", "notHeld", "dncPresent", "algoStrategy", "solicited", "whatIf", "status",
    "initMarginBefore", "maintMarginBefore", "equityWithLoanBefore", "initMarginChange",
    "maintMarginChange", "equityWithLoanChange", "initMarginAfter", "maintMarginAfter",
    "equityWithLoanAfter", "commission", "minCommission", "maxCommission",
    "commissionCurrency", "warningText", "randomizeSize", "randomizePrice", "numConditions",
    "adjustedOrderType", "triggerPrice", "trailStopPrice2", "lmtPriceOffset",
    "adjustedStopPrice", "adjustedStopLimitPrice", "adjustedTrailingAmount",
    "adjustableTrailingUnit", "softDollarTierName", "softDollarTierValue",
    "softDollarTierDisplayName", "cashQty", "dontUseAutoPriceForHedge", "isOmsContainer",
    "discretionaryUpToLimitPrice", "usePriceMgmtAlgo"]
COMPLETED_ORDER_FIELDS = _ORDER_COMMON + [
    "permId", "outsideRth", "hidden", "discretionaryAmt", "goodAfterTime", "faGroup",
    "faMethod", "faPercentage", "faProfile", "modelCode", "goodTillDate", "rule80A",
    "percentOffset", "settlingFirm", "shortSaleSlot", "designatedLocation", "exemptCode",
    "startingPrice", "stockRefPrice", "delta", "stockRangeLower", "stockRangeUpper",
    "displaySize", "sweepToFill", "allOrNone", "minQty", "ocaType", "triggerMethod",
    "volatility", "volatilityType", "deltaNeutralOrderType", "deltaNeutralAuxPrice",
    "continuousUpdate", "referencePriceType", "trailStopPrice", "trailingPercent",
    "comboLegsDescrip", "numLegs", "numOrderLegs", "numParams", "scaleInitLevelSize",
    "scaleSubsLevelSize", "scalePriceIncrement", "hedgeType", "clearingAccount",
    "clearingIntent", "notHeld", "dncPresent", "algoStrategy", "solicited", "status",
    "randomizeSize", "randomizePrice", "numConditions", "trailStopPrice2", "lmtPriceOffset",
    "cashQty", "dontUseAutoPriceForHedge", "isOmsContainer", "autoCancelDate",
    "filledQuantity", "refFuturesConId", "autoCancelParent", "shareholder", "imbalanceOnly",
    "routeMarketableToBbo", "parentPermId", "completedTime", "completedStatus"]


@dataclass
class Instrument:
    """One tradable contract of the fake's catalog."""

    con_id: int
    symbol: str
    sec_type: str
    currency: str
    exchange: str
    price: float
    tick: float
    expiry: str = ""
    multiplier: float = 1.0
    local_symbol: str = ""

    @property
    def bid(self) -> float:
        return round(self.price - self.tick, 10)

    @property
    def ask(self) -> float:
        return round(self.price + self.tick, 10)

    def contract_fields(self, exchange: Optional[str] = None) -> list:
        """conId .. tradingClass as execDetails/openOrder carry them (11 fields)."""
        mult = "" if self.multiplier == 1 else _num(self.multiplier)
        return [self.con_id, self.symbol, self.sec_type, self.expiry, 0.0, "", mult,
                exchange or self.exchange, self.currency, self.local_symbol or self.symbol,
                self.symbol]


def default_instruments() -> list[Instrument]:
    """The catalog the fake starts with."""
    return [
        Instrument(756733, "SPY", "STK", "USD", "SMART", 450.0, 0.01),
        Instrument(265598, "AAPL", "STK", "USD", "SMART", 190.0, 0.01),
        Instrument(12087792, "EUR", "CASH", "USD", "IDEALPRO", 1.085, 0.00005, local_symbol="EUR.USD"),
        Instrument(495512563, "ES", "FUT", "USD", "CME", 4500.0, 0.25, expiry="20241220",
                   multiplier=50.0, local_symbol="ESZ4"),
    ]


@dataclass
class FakeOrder:
    """An order as the fake broker keeps it."""

    client_id: int
    order_id: int
    perm_id: int
    instrument: Instrument
    action: str
    qty: float
    order_type: str
    lmt_price: float
    aux_price: float
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_price: float = 0.0
    last_price: float = 0.0

    @property
    def remaining(self) -> float:
        return self.qty - self.filled

    @property
    def sign(self) -> int:
        return 1 if self.action == "BUY" else -1

    @property
    def done(self) -> bool:
        return self.status in ("Filled", "Cancelled", "Inactive", "ApiCancelled")


@dataclass
class Execution:
    """One fill as the fake reports it in execDetails and commissionReport."""

    exec_id: str
    order: FakeOrder
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    time: float
    commission: float
    realized_pnl: float


@dataclass
class PositionBook:
    """Net position of the account in one instrument; avg_cost includes the multiplier."""

    qty: float = 0.0
    avg_cost: float = 0.0
    realized: float = 0.0


@dataclass
class Subscription:
    """A live stream for one connection (ticks or real-time bars)."""

    req_id: int
    instrument: Instrument
    kind: str
    task: Optional[asyncio.Task] = None


class Connection:
    """One client socket: handshake state, clientId, live subscriptions."""

    def __init__(self, server: "FakeTWS", reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        self.client_id: Optional[int] = None
        self.subs: dict[int, Subscription] = {}
        self.account_updates = False
        self.positions = False
        self.closed = False

    def send(self, *fields) -> None:
        """Encode one message as the TWS does: fields joined by NUL, length-prefixed."""
        if self.closed:
            return
        text = "".join(_field(f) + "\0" for f in fields)
        data = text.encode()
        self.writer.write(struct.pack(">I", len(data)) + data)

    def error(self, req_id: int, code: int, message: str) -> None:
        """Send an error message (message id 4, version 2)."""
        self.send(ERR_MSG, 2, req_id, code, message)

    def close(self) -> None:
        """Drop the socket (as TWS does when it rejects or loses a client)."""
        if self.closed:
            return
        self.closed = True
        for sub in self.subs.values():
            if sub.task:
                sub.task.cancel()
        self.subs.clear()
        try:
            self.writer.close()
        except Exception:  # the peer may have gone already
            pass


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _field(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value == UNSET_DOUBLE:
            return ""
        return repr(value)
    return str(value)


def _ib_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y%m%d %H:%M:%S UTC")


def _parse_filter_time(text: str) -> float:
    text = text.strip()
    if not text:
        return 0.0
    stamp = text.replace("-", " ").split()
    moment = datetime.strptime(stamp[0] + stamp[1], "%Y%m%d%H:%M:%S")
    return moment.replace(tzinfo=timezone.utc).timestamp()


class FakeTWS:
    """The fake TWS: an asyncio server on 127.0.0.1 running in its own thread."""

    def __init__(self, port: int = 0, account: str = ACCOUNT, cash: float = 100_000.0,
                 bar_interval: float = 0.05, tick_interval: float = 0.05,
                 max_order_qty: float = 100_000, fill_market: bool = True):
        self.port = port
        self.account = account
        self.cash = cash
        self.bar_interval = bar_interval
        self.tick_interval = tick_interval
        self.max_order_qty = max_order_qty
        self.fill_market = fill_market
        self.instruments = default_instruments()
        self.positions: dict[int, PositionBook] = {}
        self.orders: dict[tuple[int, int], FakeOrder] = {}
        self.executions: list[Execution] = []
        self.connections: list[Connection] = []
        self.placed: list[tuple[int, int, str]] = []  # (clientId, orderId, orderRef) of new orders
        self.historical_requests: list[float] = []
        self.pacing_violations = 0
        self.history_since = 1_577_836_800  # 2020-01-01: no bars before it ("HMDS query returned no data")
        self.history_queries: list[tuple[str, str, str, str]] = []  # (symbol, endDateTime, duration, bar size)
        self.realized_total = 0.0
        self._perm_ids = itertools.count(1_000_001)
        self._exec_seq = itertools.count(1)
        self._bar_clock: dict[int, int] = {}
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self.frozen = False  # True: frames are read and dropped unprocessed (a hung TWS)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeTWS":
        """Start serving in a background thread; return once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="fake-tws", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake TWS did not start")
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def stop(self) -> None:
        """Close every connection and the listening socket; join the thread."""
        if self.loop is None or not self.loop.is_running():
            return

        async def shutdown():
            for conn in list(self.connections):
                conn.close()
            self._server.close()
            await self._server.wait_closed()
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        if self._thread:
            self._thread.join(10)

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the fake's loop and return its result (test helper)."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    # ------------------------------------------------------------------ test helpers
    def set_price(self, symbol: str, price: float) -> None:
        """Move an instrument's price; working limit/stop orders that cross it fill."""
        self.call(self._set_price, symbol, price)

    def fill(self, order_ref: str, qty: Optional[float] = None, price: Optional[float] = None) -> None:
        """Fill (part of) the working order carrying ``order_ref``, connected or not."""
        self.call(self._fill_by_ref, order_ref, qty, price)

    def drop_clients(self) -> None:
        """Close every client socket, as a network failure would."""
        self.call(lambda: [c.close() for c in list(self.connections)])

    def pause(self) -> None:
        """Stop listening and drop every client, as a TWS restart would (state is kept)."""
        async def close():
            self._server.close()
            await self._server.wait_closed()
            for conn in list(self.connections):
                conn.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def resume(self) -> None:
        """Listen again on the same port after ``pause``."""
        async def reopen():
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        asyncio.run_coroutine_threadsafe(reopen(), self.loop).result(10)

    def freeze(self) -> None:
        """Hang, as a frozen TWS does: connections stay open, requests are read and lost."""
        self.call(lambda: setattr(self, "frozen", True))

    def restart(self) -> None:
        """Restart after a freeze: every client dropped, requests sent while frozen never
        processed, orders and positions kept; listening again on the same port."""
        self.pause()
        self.call(lambda: setattr(self, "frozen", False))
        self.resume()

    def repeat_execution(self, order_ref: str) -> str:
        """Send the newest execution of ``order_ref`` again, same execId (a duplicate
        execDetails and commissionReport, as TWS sends after a reconnect); return its execId."""
        def repeat():
            ex = next(e for e in reversed(self.executions) if e.order.order_ref == order_ref)
            for conn in self._conns(ex.order.client_id):
                conn.send(EXECUTION_DATA, -1, *self._exec_fields(ex))
                conn.send(COMMISSION_REPORT, 1, *self._commission_fields(ex))
            return ex.exec_id
        return self.call(repeat)

    def position(self, symbol: str) -> float:
        """The account's net position in ``symbol`` across every clientId."""
        def net():
            return sum(pos.qty for con_id, pos in self.positions.items() if self._inst(con_id).symbol == symbol)
        return self.call(net)

    def send_raw(self, *fields) -> None:
        """Send arbitrary fields as one message to every client (garbage tests)."""
        self.call(lambda: [c.send(*fields) for c in self.connections])

    def send_error(self, code: int, message: str, req_id: int = -1) -> None:
        """Send an error/notice to every connected client (1100, 1102, 2104 ...)."""
        self.call(lambda: [c.error(req_id, code, message) for c in self.connections])

    def order_by_ref(self, order_ref: str) -> Optional[FakeOrder]:
        """The order carrying ``order_ref`` (newest first), or None."""
        return self.call(self._by_ref, order_ref)

    def orders_with_ref(self, order_ref: str) -> int:
        """How many orders were ever placed with ``order_ref`` (no order may be sent twice)."""
        return self.call(lambda: sum(1 for _, _, ref in self.placed if ref == order_ref))

    def connected_client_ids(self) -> list[int]:
        """clientIds of the live API connections."""
        return self.call(lambda: [c.client_id for c in self.connections
                                  if c.client_id is not None and not c.closed])

    def streams(self) -> list[tuple[str, str]]:
        """(kind, symbol) of every live tick or bar stream across connections."""
        return self.call(lambda: [(s.kind, s.instrument.symbol) for c in self.connections
                                  for s in c.subs.values()])

    # ------------------------------------------------------------------ socket
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        self.connections.append(conn)
        try:
            head = await reader.readexactly(4)
            if head != b"API\0":
                log.warning("bad handshake prefix %r", head)
                return
            versions = (await self._read_frame(reader)).decode()
            low, _, high = versions.split(" ")[0].lstrip("v").partition("..")
            if not (int(low) <= SERVER_VERSION <= int(high or low)):
                log.warning("client versions %s do not include %d", versions, SERVER_VERSION)
                return
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d %H:%M:%S UTC")
            conn.send(SERVER_VERSION, stamp)
            await writer.drain()
            while not conn.closed:
                frame = await self._read_frame(reader)
                if self.frozen:
                    continue
                fields = frame.decode(errors="replace").split("\0")[:-1]
                try:
                    self._handle(conn, fields)
                except Exception:
                    log.exception("fake TWS failed on message %s", fields[:3])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            conn.close()
            if conn in self.connections:
                self.connections.remove(conn)

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> bytes:
        size = struct.unpack(">I", await reader.readexactly(4))[0]
        return await reader.readexactly(size)

    # ------------------------------------------------------------------ dispatch
    def _handle(self, conn: Connection, f: list[str]) -> None:
        msg_id = int(f[0])
        if msg_id == START_API:
            self._start_api(conn, int(f[2]))
            return
        handler = {
            REQ_MKT_DATA: self._req_mkt_data, CANCEL_MKT_DATA: self._cancel_sub,
            PLACE_ORDER: self._place_order, CANCEL_ORDER: self._cancel_order,
            REQ_OPEN_ORDERS: self._req_open_orders, REQ_ALL_OPEN_ORDERS: self._req_open_orders,
            REQ_ACCT_UPDATES: self._req_account_updates, REQ_EXECUTIONS: self._req_executions,
            REQ_IDS: self._req_ids, REQ_CONTRACT_DETAILS: self._req_contract_details,
            REQ_HISTORICAL_DATA: self._req_historical, REQ_CURRENT_TIME: self._req_current_time,
            REQ_REAL_TIME_BARS: self._req_real_time_bars, CANCEL_REAL_TIME_BARS: self._cancel_sub,
            REQ_POSITIONS: self._req_positions, REQ_ACCT_UPDATES_MULTI: self._req_account_multi,
            REQ_COMPLETED_ORDERS: self._req_completed_orders,
        }.get(msg_id)
        if handler is not None:
            handler(conn, f)
        elif msg_id not in (REQ_AUTO_OPEN_ORDERS, REQ_MARKET_DATA_TYPE, CANCEL_ACCT_UPDATES_MULTI,
                            CANCEL_HISTORICAL_DATA):
            log.info("fake TWS ignores message id %d", msg_id)

    def _start_api(self, conn: Connection, client_id: int) -> None:
        if any(c.client_id == client_id and not c.closed for c in self.connections if c is not conn):
            conn.error(-1, 326, "Unable to connect as the client id is already in use. "
                                "Retry with a unique client id.")
            asyncio.get_running_loop().call_soon(conn.close)
            return
        conn.client_id = client_id
        used = [oid for (cid, oid) in self.orders if cid == client_id]
        conn.send(NEXT_VALID_ID, 1, max(used, default=0) + 1)
        conn.send(MANAGED_ACCTS, 1, self.account)
        for code, text in ((2104, "Market data farm connection is OK:usfarm"),
                           (2106, "HMDS data farm connection is OK:ushmds"),
                           (2158, "Sec-def data farm connection is OK:secdefnj")):
            conn.error(-1, code, text)

    # ------------------------------------------------------------------ contracts
    def _find(self, symbol: str, sec_type: str, currency: str, exchange: str,
              expiry: str = "", con_id: int = 0) -> Optional[Instrument]:
        for inst in self.instruments:
            if con_id and inst.con_id == con_id:
                return inst
            if (inst.symbol == symbol and inst.sec_type == sec_type
                    and (not currency or inst.currency == currency)
                    and (not exchange or exchange in (inst.exchange, "SMART") and
                         (exchange == inst.exchange or inst.sec_type == "STK"))
                    and (not expiry or inst.expiry.startswith(expiry))):
                return inst
        return None

    def _contract_from(self, f: list[str], start: int) -> Optional[Instrument]:
        # conId, symbol, secType, expiry, strike, right, multiplier, exchange,
        # primaryExchange, currency, localSymbol, tradingClass
        con_id = int(f[start] or 0)
        return self._find(f[start + 1], f[start + 2], f[start + 9], f[start + 7], f[start + 3], con_id)

    def _req_contract_details(self, conn: Connection, f: list[str]) -> None:
        req_id = int(f[2])
        inst = self._contract_from(f, 3)
        if inst is None:
            conn.error(req_id, 200, "No security definition has been found for the request")
            return
        mult = "" if inst.multiplier == 1 else _num(inst.multiplier)
        conn.send(CONTRACT_DATA, 8, req_id, inst.symbol, inst.sec_type, inst.expiry, 0.0, "",
                  inst.exchange, inst.currency, inst.local_symbol or inst.symbol,
                  inst.symbol, inst.symbol, inst.con_id, inst.tick, "",
                  mult, "LMT,MKT,STP", inst.exchange, 1, 0, inst.symbol, "", inst.expiry[:6],
                  "", "", "", "UTC", "", "", "", "", 0,
                  "", "", "", "", "", "")
        conn.send(CONTRACT_DATA_END, 1, req_id)

    # ------------------------------------------------------------------ account
    def _account_values(self) -> list[tuple[str, float]]:
        unrealized = sum(self._unrealized(cid, p) for cid, p in self.positions.items())
        gross = sum(abs(p.qty) * self._inst(cid).price * self._inst(cid).multiplier
                    for cid, p in self.positions.items())
        margin = gross * 0.25
        net_liq = self.cash + unrealized
        return [("NetLiquidation", net_liq), ("TotalCashValue", self.cash),
                ("AvailableFunds", net_liq - margin), ("BuyingPower", (net_liq - margin) * 4),
                ("InitMarginReq", margin), ("MaintMarginReq", margin * 0.8),
                ("EquityWithLoanValue", net_liq), ("GrossPositionValue", gross),
                ("UnrealizedPnL", unrealized), ("RealizedPnL", self.realized_total)]

    def _inst(self, con_id: int) -> Instrument:
        return next(i for i in self.instruments if i.con_id == con_id)

    def _unrealized(self, con_id: int, pos: PositionBook) -> float:
        inst = self._inst(con_id)
        return pos.qty * inst.price * inst.multiplier - pos.qty * pos.avg_cost

    def _send_account(self, conn: Connection) -> None:
        for tag, value in self._account_values():
            conn.send(ACCT_VALUE, 2, tag, round(value, 6), "USD", self.account)
        conn.send(ACCT_VALUE, 2, "AccountCode", self.account, "", self.account)
        for con_id, pos in self.positions.items():
            self._send_portfolio_row(conn, con_id, pos)
        conn.send(ACCT_UPDATE_TIME, 1, datetime.now(timezone.utc).strftime("%H:%M"))

    def _send_portfolio_row(self, conn: Connection, con_id: int, pos: PositionBook) -> None:
        inst = self._inst(con_id)
        fields = inst.contract_fields()
        # updatePortfolio carries primaryExchange where the others carry exchange
        fields[7] = ""
        conn.send(PORTFOLIO_VALUE, 8, *fields, _num(pos.qty), inst.price,
                  round(pos.qty * inst.price * inst.multiplier, 6), round(pos.avg_cost, 6),
                  round(self._unrealized(con_id, pos), 6), round(pos.realized, 6), self.account)

    def _req_account_updates(self, conn: Connection, f: list[str]) -> None:
        conn.account_updates = f[2] == "1"
        if conn.account_updates:
            self._send_account(conn)
            conn.send(ACCT_DOWNLOAD_END, 1, self.account)

    def _req_account_multi(self, conn: Connection, f: list[str]) -> None:
        req_id = int(f[2])
        for tag, value in self._account_values():
            conn.send(ACCOUNT_UPDATE_MULTI, 1, req_id, self.account, "", tag, round(value, 6), "USD")
        conn.send(ACCOUNT_UPDATE_MULTI_END, 1, req_id)

    def _req_positions(self, conn: Connection, f: list[str]) -> None:
        conn.positions = True
        for con_id, pos in self.positions.items():
            self._send_position(conn, con_id, pos)
        conn.send(POSITION_END, 1)

    def _send_position(self, conn: Connection, con_id: int, pos: PositionBook) -> None:
        conn.send(POSITION_DATA, 3, self.account, *self._inst(con_id).contract_fields(),
                  _num(pos.qty), round(pos.avg_cost, 6))

    def _req_ids(self, conn: Connection, f: list[str]) -> None:
        used = [oid for (cid, oid) in self.orders if cid == conn.client_id]
        conn.send(NEXT_VALID_ID, 1, max(used, default=0) + 1)

    def _req_current_time(self, conn: Connection, f: list[str]) -> None:
        conn.send(CURRENT_TIME, 1, int(time.time()))

    # ------------------------------------------------------------------ orders
    def _place_order(self, conn: Connection, f: list[str]) -> None:
        order_id = int(f[1])
        inst = self._contract_from(f, 2)
        key = (conn.client_id, order_id)
        existing = self.orders.get(key)
        if existing is not None:
            self._modify(conn, existing, f)
            return
        if inst is None:
            conn.error(order_id, 200, "No security definition has been found for the request")
            return
        order = FakeOrder(
            client_id=conn.client_id, order_id=order_id, perm_id=next(self._perm_ids),
            instrument=inst, action=f[16], qty=float(f[17]), order_type=f[18],
            lmt_price=float(f[19] or 0), aux_price=float(f[20] or 0), tif=f[21], oca_group=f[22],
            account=f[23] or self.account, order_ref=f[26], transmit=f[27] != "0",
            parent_id=int(f[28] or 0))
        self.placed.append((conn.client_id, order_id, order.order_ref))
        reason = self._reject_reason(order)
        self.orders[key] = order
        if reason:
            order.status = "Cancelled"
            conn.error(order_id, 201, f"Order rejected - reason:{reason}")
            self._report_status(order)
            return
        parent = self.orders.get((order.client_id, order.parent_id)) if order.parent_id else None
        held = not order.transmit or (parent is not None and parent.status != "Filled")
        order.status = "PreSubmitted" if held else "Submitted"
        self._report_open(order)
        if order.transmit and parent is not None and not parent.transmit:
            self._transmit_group(parent)
        if not held:
            self._try_fill(order)

    def _reject_reason(self, order: FakeOrder) -> str:
        if order.action not in ("BUY", "SELL"):
            return f"Invalid action {order.action!r}"
        if order.qty <= 0 or order.qty != order.qty:
            return "The order size must be positive"
        if order.qty > self.max_order_qty:
            return (f"YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION YOUR "
                    f"EQUITY WITH LOAN VALUE [{self.cash:.2f} USD] MUST EXCEED THE INITIAL MARGIN")
        if order.order_type not in ("MKT", "LMT", "STP"):
            return f"Order type {order.order_type} is not supported by the fake TWS"
        if order.order_type == "LMT" and not order.lmt_price > 0:
            return "The limit price must be positive"
        if order.order_type == "STP" and not order.aux_price > 0:
            return "The stop price must be positive"
        return ""

    def _modify(self, conn: Connection, order: FakeOrder, f: list[str]) -> None:
        if order.done:
            conn.error(order.order_id, 104, "Can't modify a filled order.")
            return
        order.qty = float(f[17])
        order.lmt_price = float(f[19] or 0)
        order.aux_price = float(f[20] or 0)
        order.transmit = f[27] != "0"
        if order.status == "PreSubmitted" and order.transmit and not order.parent_id:
            order.status = "Submitted"
        self._report_open(order)
        self._try_fill(order)

    def _transmit_group(self, parent: FakeOrder) -> None:
        """The last child of a bracket sent with transmit=1 sends the parent and siblings."""
        for child in self.orders.values():
            if child.parent_id == parent.order_id and child.client_id == parent.client_id \
                    and not child.done:
                child.transmit = True
        parent.transmit = True
        if parent.status == "PreSubmitted" and not parent.done:
            parent.status = "Submitted"
            self._report_status(parent)
            self._try_fill(parent)

    def _cancel_order(self, conn: Connection, f: list[str]) -> None:
        order_id = int(f[2])
        order = self.orders.get((conn.client_id, order_id))
        if order is None or order.done:
            conn.error(order_id, 10148, f"OrderId {order_id} that needs to be cancelled "
                                        "cannot be cancelled, state: unknown.")
            return
        self._cancel(order, "")

    def _cancel(self, order: FakeOrder, why: str) -> None:
        order.status = "Cancelled"
        self._report_status(order)
        for conn in self._conns(order.client_id):
            conn.error(order.order_id, 202, f"Order Canceled - reason:{why}")
        for child in list(self.orders.values()):
            if child.parent_id == order.order_id and child.client_id == order.client_id \
                    and not child.done:
                self._cancel(child, "parent order cancelled")

    def _conns(self, client_id: int) -> list[Connection]:
        return [c for c in self.connections if c.client_id == client_id and not c.closed]

    def _report_open(self, order: FakeOrder) -> None:
        for conn in self._conns(order.client_id):
            conn.send(OPEN_ORDER, *self._open_order_fields(order))
        self._report_status(order)

    def _report_status(self, order: FakeOrder) -> None:
        for conn in self._conns(order.client_id):
            conn.send(ORDER_STATUS, order.order_id, order.status, _num(order.filled),
                      _num(order.remaining), order.avg_price, order.perm_id, order.parent_id,
                      order.last_price, order.client_id, "", 0.0)

    def _open_order_fields(self, o: FakeOrder) -> list:
        values = self._order_values(o)
        return ([o.order_id, *o.instrument.contract_fields()]
                + [values.get(name, "") for name in OPEN_ORDER_FIELDS])

    @staticmethod
    def _order_values(o: FakeOrder) -> dict:
        return {
            "action": o.action, "totalQuantity": _num(o.qty), "orderType": o.order_type,
            "lmtPrice": o.lmt_price if o.order_type == "LMT" else UNSET_DOUBLE,
            "auxPrice": o.aux_price if o.order_type == "STP" else UNSET_DOUBLE,
            "tif": o.tif, "ocaGroup": o.oca_group, "account": o.account, "openClose": "O",
            "origin": 0, "orderRef": o.order_ref, "clientId": o.client_id, "permId": o.perm_id,
            "exemptCode": -1, "ocaType": 3 if o.oca_group else 0, "parentId": o.parent_id,
            "numLegs": 0, "numOrderLegs": 0, "numParams": 0, "dncPresent": 0, "status": o.status,
            "numConditions": 0, "filledQuantity": _num(o.filled),
            "completedTime": _ib_time(time.time()), "completedStatus": o.status,
        }

    def _try_fill(self, order: FakeOrder) -> None:
        if order.done or order.status != "Submitted" or not order.transmit:
            return
        inst = order.instrument
        price = inst.ask if order.sign > 0 else inst.bid
        if order.order_type == "MKT":
            if self.fill_market:
                self._execute(order, order.remaining, price)
        elif order.order_type == "LMT":
            if (order.sign > 0 and price <= order.lmt_price) or (order.sign < 0 and price >= order.lmt_price):
                better = min(price, order.lmt_price) if order.sign > 0 else max(price, order.lmt_price)
                self._execute(order, order.remaining, better)
        elif order.order_type == "STP":
            if (order.sign > 0 and price >= order.aux_price) or (order.sign < 0 and price <= order.aux_price):
                self._execute(order, order.remaining, price)

    def _fill_by_ref(self, order_ref: str, qty: Optional[float], price: Optional[float]) -> None:
        order = self._by_ref(order_ref)
        if order is None or order.done:
            raise ValueError(f"no working order with orderRef {order_ref!r}")
        inst = order.instrument
        self._execute(order, qty or order.remaining,
                      price if price is not None else (inst.ask if order.sign > 0 else inst.bid))

    def _by_ref(self, order_ref: str) -> Optional[FakeOrder]:
        for order in reversed(list(self.orders.values())):
            if order.order_ref == order_ref:
                return order
        return None

    def _set_price(self, symbol: str, price: float) -> None:
        inst = next(i for i in self.instruments if i.symbol == symbol)
        inst.price = price
        for order in list(self.orders.values()):
            if order.instrument is inst:
                self._try_fill(order)
        for conn in self.connections:
            if conn.account_updates:
                self._send_account(conn)

    def _execute(self, order: FakeOrder, qty: float, price: float) -> None:
        qty = min(qty, order.remaining)
        inst = order.instrument
        seq = next(self._exec_seq)
        exec_id = f"0000e0d5.{seq:08x}.01.01"
        commission = self._commission(inst, qty, price)
        realized = self._book(inst, order.sign * qty, price, commission)
        order.avg_price = (order.avg_price * order.filled + price * qty) / (order.filled + qty)
        order.filled += qty
        order.last_price = price
        order.status = "Filled" if order.remaining <= 1e-9 else "Submitted"
        ex = Execution(exec_id, order, qty, price, order.filled, order.avg_price, time.time(),
                       commission, realized)
        self.executions.append(ex)
        for conn in self._conns(order.client_id):
            conn.send(EXECUTION_DATA, -1, *self._exec_fields(ex))
        self._report_status(order)
        for conn in self._conns(order.client_id):
            conn.send(COMMISSION_REPORT, 1, *self._commission_fields(ex))
        for conn in self.connections:
            if conn.account_updates:
                self._send_account(conn)
        if order.status == "Filled":
            self._after_filled(order)

    def _after_filled(self, order: FakeOrder) -> None:
        # children of a filled parent start working; an OCA sibling of a filled order goes
        for other in list(self.orders.values()):
            if other.done or other.client_id != order.client_id or other is order:
                continue
            if other.parent_id == order.order_id and other.status == "PreSubmitted" and other.transmit:
                other.status = "Submitted"
                self._report_status(other)
            elif order.oca_group and other.oca_group == order.oca_group:
                self._cancel(other, "OCA group member filled")
        for other in list(self.orders.values()):
            if other.parent_id == order.order_id and other.client_id == order.client_id:
                self._try_fill(other)

    @staticmethod
    def _commission(inst: Instrument, qty: float, price: float) -> float:
        if inst.sec_type == "STK":
            return round(max(1.0, 0.005 * qty), 6)
        if inst.sec_type == "FUT":
            return round(2.25 * qty, 6)
        return round(max(2.0, qty * price * 0.00002), 6)

    def _book(self, inst: Instrument, signed_qty: float, price: float, commission: float) -> float:
        pos = self.positions.setdefault(inst.con_id, PositionBook())
        cost = price * inst.multiplier
        realized = 0.0
        self.cash -= commission
        if pos.qty == 0 or (pos.qty > 0) == (signed_qty > 0):
            total = pos.qty + signed_qty
            pos.avg_cost = (pos.avg_cost * abs(pos.qty) + cost * abs(signed_qty)) / abs(total)
            pos.qty = total
        else:
            closing = min(abs(signed_qty), abs(pos.qty))
            direction = 1 if pos.qty > 0 else -1
            gross = (cost - pos.avg_cost) * closing * direction
            self.cash += gross
            realized = gross - commission  # IB reports realized P&L net of commission
            pos.qty += signed_qty
            if abs(pos.qty) < 1e-9:
                pos.qty, pos.avg_cost = 0.0, 0.0
            elif (pos.qty > 0) != (direction > 0):
                pos.avg_cost = cost
        pos.realized += realized
        self.realized_total += realized
        for conn in self.connections:
            if conn.positions:
                self._send_position(conn, inst.con_id, pos)
        if pos.qty == 0:
            for conn in self.connections:
                if conn.account_updates:
                    self._send_portfolio_row(conn, inst.con_id, pos)
            del self.positions[inst.con_id]
        return realized

    def _exec_fields(self, ex: Execution) -> list:
        o = ex.order
        return [o.order_id, *o.instrument.contract_fields(), ex.exec_id, _ib_time(ex.time),
                o.account, o.instrument.exchange, "BOT" if o.sign > 0 else "SLD", _num(ex.shares),
                ex.price, o.perm_id, o.client_id, 0, _num(ex.cum_qty), ex.avg_price, o.order_ref,
                "", "", "", 1]

    @staticmethod
    def _commission_fields(ex: Execution) -> list:
        return [ex.exec_id, ex.commission, "USD",
                ex.realized_pnl if ex.realized_pnl else UNSET_DOUBLE, UNSET_DOUBLE, ""]

    def _req_open_orders(self, conn: Connection, f: list[str]) -> None:
        for order in self.orders.values():
            if order.client_id == conn.client_id and not order.done:
                conn.send(OPEN_ORDER, *self._open_order_fields(order))
                conn.send(ORDER_STATUS, order.order_id, order.status, _num(order.filled),
                          _num(order.remaining), order.avg_price, order.perm_id, order.parent_id,
                          order.last_price, order.client_id, "", 0.0)
        conn.send(OPEN_ORDER_END, 1)

    def _req_completed_orders(self, conn: Connection, f: list[str]) -> None:
        for o in self.orders.values():
            if o.done:
                values = self._order_values(o)
                conn.send(COMPLETED_ORDER, *o.instrument.contract_fields(),
                          *[values.get(name, "") for name in COMPLETED_ORDER_FIELDS])
        conn.send(COMPLETED_ORDERS_END)

    def _req_executions(self, conn: Connection, f: list[str]) -> None:
        req_id = int(f[2])
        since = _parse_filter_time(f[5]) if len(f) > 5 else 0.0
        for ex in self.executions:
            if ex.order.client_id != conn.client_id or ex.time < since:
                continue
            conn.send(EXECUTION_DATA, req_id, *self._exec_fields(ex))
            conn.send(COMMISSION_REPORT, 1, *self._commission_fields(ex))
        conn.send(EXECUTION_DATA_END, 1, req_id)

    # ------------------------------------------------------------------ market data
    def _req_mkt_data(self, conn: Connection, f: list[str]) -> None:
        req_id = int(f[2])
        inst = self._contract_from(f, 3)
        if inst is None:
            conn.error(req_id, 200, "No security definition has been found for the request")
            return
        sub = Subscription(req_id, inst, "ticks")
        sub.task = asyncio.get_running_loop().create_task(self._tick_stream(conn, sub))
        conn.subs[req_id] = sub

    async def _tick_stream(self, conn: Connection, sub: Subscription) -> None:
        step = 0
        while not conn.closed:
            inst = sub.instrument
            wiggle = inst.tick * (step % 3)
            conn.send(TICK_PRICE, 6, sub.req_id, 1, inst.bid - wiggle, 100, 0)
            conn.send(TICK_PRICE, 6, sub.req_id, 2, inst.ask + wiggle, 100, 0)
            conn.send(TICK_PRICE, 6, sub.req_id, 4, inst.price + wiggle, 10, 0)
            conn.send(TICK_SIZE, 6, sub.req_id, 8, 1000 + step)
            step += 1
            await asyncio.sleep(self.tick_interval)

    def _req_real_time_bars(self, conn: Connection, f: list[str]) -> None:
        req_id = int(f[2])
        inst = self._contract_from(f, 3)
        if inst is None:
            conn.error(req_id, 200, "No security definition has been found for the request")
            return
        sub = Subscription(req_id, inst, "bars")
        sub.task = asyncio.get_running_loop().create_task(self._bar_stream(conn, sub))
        conn.subs[req_id] = sub

    async def _bar_stream(self, conn: Connection, sub: Subscription) -> None:
        # Bars come every ``bar_interval`` real seconds but their times advance by 5 s
        # each, continuing across reconnects, so a test sees a minute of bars quickly.
        inst = sub.instrument
        clock = self._bar_clock.setdefault(inst.con_id, int(time.time()) // 300 * 300)
        while not conn.closed:
            clock = self._bar_clock[inst.con_id] = max(self._bar_clock[inst.con_id], clock) + 5
            base = inst.price
            conn.send(REAL_TIME_BARS, 3, sub.req_id, clock - 5, base, base + inst.tick * 2,
                      base - inst.tick * 2, base + inst.tick, 10, base, 3)
            await asyncio.sleep(self.bar_interval)

    def _cancel_sub(self, conn: Connection, f: list[str]) -> None:
        sub = conn.subs.pop(int(f[2]), None)
        if sub and sub.task:
            sub.task.cancel()

    def _req_historical(self, conn: Connection, f: list[str]) -> None:
        req_id = int(f[1])
        inst = self._contract_from(f, 2)
        now = time.monotonic()
        recent = [t for t in self.historical_requests if now - t < 2.0]
        self.historical_requests.append(now)
        if len(recent) >= 6:
            self.pacing_violations += 1
            conn.error(req_id, 162, "Historical Market Data Service error message:"
                                    "Historical data request pacing violation")
            return
        if inst is None:
            conn.error(req_id, 200, "No security definition has been found for the request")
            return
        end_text, bar_size, duration = f[15], f[16], f[17]
        self.history_queries.append((inst.symbol, end_text, duration, bar_size))
        seconds = _bar_seconds(bar_size)
        try:
            end = _parse_end_time(end_text) if end_text else time.time()
        except ValueError:
            conn.error(req_id, 321, f"Error validating request:-'bB' : cause - Invalid end date/time {end_text!r}")
            return
        span = _duration_seconds(duration)
        if span // seconds > MAX_HISTORY_BARS:
            conn.error(req_id, 162, "Historical Market Data Service error message:Time length exceed max.")
            return
        # Completed bars only, starting at whole multiples of their size, the last one ending
        # by ``end``; none before ``history_since`` (the instrument's first day of data).
        last_end = int(end) // seconds * seconds
        first = max(last_end - span, self.history_since)
        first = -(-first // seconds) * seconds
        starts = list(range(first, last_end, seconds))
        if not starts:
            conn.error(req_id, 162, "Historical Market Data Service error message:HMDS query returned no data: "
                                    f"{inst.symbol}@{inst.exchange} {_ib_time(end)}")
            return
        rows = []
        for start in starts:
            o, c = history_price(inst, start), history_price(inst, start + seconds)
            rows += [start, o, max(o, c) + inst.tick, min(o, c) - inst.tick, c, 100, (o + c) / 2, 5]
        conn.send(HISTORICAL_DATA, req_id, _ib_time(starts[0]), _ib_time(end), len(starts), *rows)


def history_price(inst: Instrument, epoch: int) -> float:
    """The fake's deterministic historical price of ``inst`` at ``epoch`` seconds."""
    return round(inst.price * (1 + 0.002 * math.sin(2 * math.pi * epoch / 86_400)) / inst.tick) * inst.tick


def _parse_end_time(text: str) -> float:
    """IB's endDateTime: ``yyyymmdd HH:MM:SS UTC`` / ``yyyymmdd-HH:MM:SS`` (UTC)."""
    text = text.strip()
    if text.endswith(" UTC"):
        moment = datetime.strptime(text[:-4], "%Y%m%d %H:%M:%S")
    else:
        moment = datetime.strptime(text, "%Y%m%d-%H:%M:%S")
    return moment.replace(tzinfo=timezone.utc).timestamp()


def _bar_seconds(size: str) -> int:
    amount, unit = size.split()[:2]
    unit = unit.rstrip("s")
    return int(amount) * {"sec": 1, "min": 60, "hour": 3600, "day": 86400}[unit]


def _duration_seconds(duration: str) -> int:
    amount, unit = duration.split()
    return int(amount) * {"S": 1, "D": 86400, "W": 604800}[unit]


def main() -> None:
    """Run the fake TWS by hand until interrupted."""
    parser = argparse.ArgumentParser(description="fake TWS speaking the TWS API socket protocol")
    parser.add_argument("--port", type=int, default=7497)
    parser.add_argument("--account", default=ACCOUNT)
    parser.add_argument("--bar-interval", type=float, default=5.0,
                        help="real seconds between 5-second bars (5 = real time)")
    parser.add_argument("--tick-interval", type=float, default=0.25)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    server = FakeTWS(args.port, args.account, bar_interval=args.bar_interval,
                     tick_interval=args.tick_interval).start()
    print(f"fake TWS listening on 127.0.0.1:{server.port} account {args.account}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
