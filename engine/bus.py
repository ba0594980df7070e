"""The engine's sockets: worker queues, the client ROUTER and the event PUB.

- Workers: one PUSH per account (the account's in_queue) and one shared PULL that every
  worker's out_queue connects to (ZeroMQ queues fairly across workers, so a flooding
  worker cannot starve another).
- Clients (strategies, CLI, API): one ROUTER. Each client has a ``ClientSession`` whose
  outgoing messages leave in frames of at most ``MAX_FRAME_MESSAGES`` per engine turn.
  When a client is slow (its high-water mark is reached) order and account messages wait
  in a backlog, never dropped; completed bars wait too, up to ``MAX_QUEUED_BARS``; forming
  bars, and completed bars beyond that, are conflated to the latest per (account, epic,
  time frame). Blocks of bars (``market_data_block``) travel as the worker packed them and
  count as the bars they hold; a frame carries at most ``MAX_FRAME_BARS`` bars.
- Observers: one PUB carrying every event with a sequence number; a gap in ``seq`` tells
  a subscriber it lost messages (PUB drops at its high-water mark by design).
"""
from __future__ import annotations

import contextlib
import logging
from collections import deque
from pathlib import Path
from typing import Iterable, Optional

import zmq

from maotrade.errors import ProtocolError
from maotrade.log import redact_account_reports
from maotrade.protocol import FROM_CLIENT, FROM_WORKER, as_dict, as_dicts, encode, to_client
from maotrade.protocol.bar_block import bar_maps, decode_rows, row_count
from maotrade.queues import ZMQ_EVENTS, ZMQ_POLLIN, MessageQueue, limit_frame_size

log = logging.getLogger(__name__)

# Back-pressure is counted in frames, so frames to clients are capped in size: a slow
# client then holds at most CLIENT_HWM * MAX_FRAME_MESSAGES messages in flight before the
# engine starts conflating its market data.
CLIENT_HWM = 8
MAX_FRAME_MESSAGES = 2000
# A blocked client's completed bars wait (in order) up to this many; beyond, they conflate too.
MAX_QUEUED_BARS = 200_000
# Blocks from a source that pauses when asked (capability ``pause``) are not conflated
# below this: what was in flight when the hold went out must fit (a bar in a block is ~50 bytes).
MAX_QUEUED_PAUSED_BARS = 5_000_000
# Bars per frame at most (a block counts as the bars it holds), so CLIENT_HWM bounds bars in flight.
MAX_FRAME_BARS = 20_000
PUB_HWM = 100_000
MARKET_DATA = to_client.MarketData.TYPE
MARKET_DATA_BLOCK = to_client.MarketDataBlock.TYPE
MARKET_DATA_TYPES = frozenset({MARKET_DATA, MARKET_DATA_BLOCK})


def bar_count(msg: dict) -> int:
    """The bars a message carries: a block's rows, one for a bar, none for anything else."""
    kind = msg.get("type")
    if kind == MARKET_DATA_BLOCK:
        return row_count(msg["bars"])
    return 1 if kind == MARKET_DATA else 0


class ClientSession:
    """One connected client: identity, name and what waits to be sent (its subscriptions: ``engine.market_data``)."""

    def __init__(self, identity: bytes, name: str = "", socket=None):
        self.identity = identity
        self.socket = socket
        self.name = name
        self.outbox: list[dict] = []
        self.data_outbox: list[dict] = []
        self.data_backlog: deque[dict] = deque()
        self.backlog: deque[dict] = deque()
        self.conflated: dict[tuple, dict] = {}
        self.conflated_count = 0
        self.queued_bars = 0  # bars waiting in ``data_backlog`` (a block counts as its bars)
        self.holding = False  # its streams are paused at their workers (``MarketData.pace``)
        self.blocked = False
        self.answering = None  # request_id of the request being handled, echoed in its answers

    def put(self, msg: dict) -> None:
        """Queue an order, account or control message: delivered in order, never dropped.

        While the engine handles a request that carried a ``request_id``, what it sends to
        the asking client carries the same ``request_id`` (``EngineClient.request``
        correlates by it).
        """
        if self.answering is not None and "request_id" not in msg:
            msg = {**msg, "request_id": self.answering}
        self.outbox.append(msg)

    def put_data(self, msg: dict, limit: Optional[int] = None) -> None:
        """Queue one market-data message, a bar or a block of bars (the hot path: no type
        check). While the client is blocked, completed bars wait while fewer than ``limit``
        do; the rest is conflated."""
        if self.blocked:
            self._hold(msg, limit or MAX_QUEUED_BARS)
        else:
            self.data_outbox.append(msg)

    def _hold(self, msg: dict, limit: int) -> None:
        # Completed bars are what strategies compute on: keep them in order while there is
        # room. Forming bars only matter as the latest value.
        count = bar_count(msg)
        if msg.get("completed") and self.queued_bars + count <= limit:
            self.data_backlog.append(msg)
            self.queued_bars += count
        elif count == 1 and msg.get("type") == MARKET_DATA:
            self._conflate(msg)
        elif count:
            # A block past the limit (or of forming bars): only its last bar is kept.
            rows, _ = decode_rows(msg["bars"])
            self.conflated_count += count - 1
            self._conflate(bar_maps(msg, rows[-1:])[0])

    def _conflate(self, msg: dict) -> None:
        key = (msg.get("account"), msg.get("epic"), msg.get("time_frame"))
        if key in self.conflated:
            self.conflated_count += 1
        self.conflated[key] = msg

    @property
    def waiting(self) -> bool:
        """True if anything is queued."""
        return bool(self.outbox or self.data_outbox or self.backlog or self.data_backlog or self.conflated)

    def take_frame(self) -> list[dict]:
        """Return everything due, reliable messages first in order, then market data."""
        frame = list(self.backlog)
        self.backlog.clear()
        frame.extend(self.outbox)
        self.outbox = []
        if self.data_backlog:
            frame.extend(self.data_backlog)
            self.data_backlog.clear()
            self.queued_bars = 0
        if self.conflated:
            frame.extend(self.conflated.values())
            self.conflated.clear()
        frame.extend(self.data_outbox)
        self.data_outbox = []
        return frame

    def give_back(self, messages: list[dict]) -> None:
        """Keep messages the socket would not take, in order: they were accepted already
        (what came since is held or conflated by ``put_data``)."""
        for msg in messages:
            if msg.get("type") in MARKET_DATA_TYPES:
                self.data_backlog.append(msg)
                self.queued_bars += bar_count(msg)
            else:
                self.backlog.append(msg)


def frame_bounds(messages: list[dict]) -> list[tuple[int, int]]:
    """Cut ``messages`` into frames of at most ``MAX_FRAME_MESSAGES`` messages and about
    ``MAX_FRAME_BARS`` bars (a block is never split); return each frame's (start, end)."""
    if len(messages) <= 1:
        return [(0, len(messages))]
    bounds, start, bars = [], 0, 0
    for index, msg in enumerate(messages):
        bars += bar_count(msg)
        if index + 1 - start >= MAX_FRAME_MESSAGES or bars >= MAX_FRAME_BARS:
            bounds.append((start, index + 1))
            start, bars = index + 1, 0
    if start < len(messages):
        bounds.append((start, len(messages)))
    return bounds


class EngineBus:
    """Owns every engine socket; used from the engine's loop thread only."""

    def __init__(self, run_dir: Path, client_address: Optional[str] = None,
                 pub_address: Optional[str] = None, tcp_address: Optional[str] = None,
                 data_dir: Optional[Path] = None):
        self.run_dir = Path(run_dir)
        self.ctx = zmq.Context()
        self.worker_out_address = f"ipc://{self.run_dir}/workers.out"
        # The second redaction point (workers scrub what they send): nothing a worker says
        # is journaled, published or answered before every string in it is redacted.
        self.from_workers = MessageQueue.receiver(self.ctx, self.worker_out_address, FROM_WORKER, bind=True,
                                                  name="workers", as_maps=True,
                                                  scrub=redact_account_reports)
        self.to_workers: dict[str, MessageQueue] = {}
        self.router = self._make_router()
        self.client_address = client_address or f"ipc://{self.run_dir}/engine.router"
        self.router.bind(self.client_address)
        # XPUB, not PUB: it tells us whether anyone listens, so an unobserved engine
        # never spends time packing events.
        self.pub = limit_frame_size(self.ctx.socket(zmq.XPUB))
        self.pub.setsockopt(zmq.SNDHWM, PUB_HWM)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub_address = pub_address or f"ipc://{self.run_dir}/engine.pub"
        self.pub.bind(self.pub_address)
        self.pub_seq = 0
        self.observers = 0
        self._pub_outbox: list[dict] = []
        self.routers = [self.router]
        self.tcp_address = None
        self.authenticator = None
        if tcp_address:
            # Clients over tcp must present an authorized Curve key; ipc clients rely on the
            # 0700 run folder instead.
            from engine.curve import secure_router
            tcp = self._make_router()
            self.authenticator, self.key_watcher = secure_router(self.ctx, tcp, Path(data_dir or run_dir))
            tcp.bind(tcp_address)
            self.tcp_address = tcp.getsockopt_string(zmq.LAST_ENDPOINT)
            self.routers.append(tcp)
        self.clients: dict[bytes, ClientSession] = {}
        self.gone: list[ClientSession] = []  # sessions dropped since the engine last looked
        self.malformed_client_frames = 0

    def _make_router(self) -> zmq.Socket:
        router = limit_frame_size(self.ctx.socket(zmq.ROUTER))
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.SNDHWM, CLIENT_HWM)
        router.setsockopt(zmq.RCVHWM, CLIENT_HWM)
        router.setsockopt(zmq.LINGER, 0)
        return router

    # -- workers ----------------------------------------------------------------------
    def worker_in_address(self, account: str) -> str:
        """Address of an account's in_queue."""
        return f"ipc://{self.run_dir}/w{account}.in"

    def open_worker_queue(self, account: str) -> MessageQueue:
        """Bind (once) and return the in_queue of ``account``."""
        queue = self.to_workers.get(account)
        if queue is None:
            queue = MessageQueue.sender(self.ctx, self.worker_in_address(account), bind=True, name=f"in:{account}")
            self.to_workers[account] = queue
        return queue

    def reset_worker_queue(self, account: str) -> MessageQueue:
        """Rebind an account's in_queue (after its worker died, so nothing stale is delivered)."""
        old = self.to_workers.pop(account, None)
        if old is not None:
            old.close(linger_ms=0)
        return self.open_worker_queue(account)

    # -- clients --------------------------------------------------------------------------
    def receive_clients(self, max_frames: int = 1000) -> list[tuple[ClientSession, dict]]:
        """Return (session, message) for every client message already received."""
        out = []
        for router in self.routers:
            for _ in range(max_frames):
                if not router.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN:
                    break
                try:
                    frames = router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(frames) != 2:
                    self.malformed_client_frames += 1
                    continue
                identity, payload = frames
                session = self.clients.get(identity)
                if session is None:
                    session = self.clients[identity] = ClientSession(identity, socket=router)
                try:
                    messages, refused = FROM_CLIENT.decode(payload)
                except ProtocolError as exc:
                    self.malformed_client_frames += 1
                    log.warning("event=malformed_client_frame client=%s reason=%s",
                                session.name or identity.hex(), exc)
                    session.put(as_dict(to_client.Error(reason=f"malformed frame: {exc}")))
                    continue
                for refusal in refused:
                    # Refused before any handler saw it: counted, and the client told why.
                    self.malformed_client_frames += 1
                    log.warning("event=malformed_client_message client=%s reason=%s",
                                session.name or identity.hex(), refusal.reason)
                    session.put(as_dict(to_client.Error(reason=refusal.reason, request=refusal.type or None,
                                                        request_id=refusal.request_id)))
                out.extend((session, msg) for msg in as_dicts(messages))
        return out

    def flush_clients(self) -> None:
        """Send each client its frames; keep what a slow client cannot take yet."""
        for identity, session in list(self.clients.items()):
            if not session.waiting:
                continue
            messages = session.take_frame()
            for start, end in frame_bounds(messages):
                try:
                    (session.socket or self.router).send_multipart([identity, encode(messages[start:end])],
                                                                   zmq.NOBLOCK)
                except zmq.Again:
                    session.blocked = True
                    session.give_back(messages[start:])
                    break
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.EHOSTUNREACH:
                        log.info("event=client_gone client=%s", session.name or identity.hex())
                        self.clients.pop(identity, None)
                        self.gone.append(session)
                        break
                    raise
            else:
                session.blocked = False

    def sessions(self) -> Iterable[ClientSession]:
        """Every known client."""
        return self.clients.values()

    # -- observers ------------------------------------------------------------------------
    def track_subscribers(self) -> None:
        """Count observers from XPUB's (un)subscription messages."""
        while self.pub.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN:
            try:
                frame = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame[:1] == b"\x01":
                self.observers += 1
            elif frame[:1] == b"\x00":
                self.observers = max(0, self.observers - 1)

    def publish(self, msg: dict) -> None:
        """Queue an event for the PUB socket (numbered even when nobody listens)."""
        self.pub_seq += 1
        if self.observers:
            self._pub_outbox.append(dict(msg, seq=self.pub_seq))

    def flush_pub(self) -> None:
        """Publish this turn's events as one frame (dropped if no one can take it)."""
        if self._pub_outbox:
            # Observers may miss events at the high-water mark; their seq numbers show it.
            with contextlib.suppress(zmq.Again):
                self.pub.send(encode(self._pub_outbox), zmq.NOBLOCK)
            self._pub_outbox = []

    def close(self) -> None:
        """Close every socket and the context."""
        self.flush_clients()
        for queue in self.to_workers.values():
            queue.close(linger_ms=0)
        self.from_workers.close(linger_ms=0)
        for router in self.routers:
            router.close(0)
        self.pub.close(0)
        if self.authenticator is not None:
            self.key_watcher.stop()
            self.authenticator.stop()
        self.ctx.term()
