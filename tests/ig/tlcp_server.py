"""The Lightstreamer half of the IG simulator: TLCP 2.5 over WebSocket.

lightstreamer-client-lib opens ``ws://host/lightstreamer`` with the subprotocol
``TLCP-2.5.0.lightstreamer.com`` (its first choice of transport) and speaks text frames:
``wsok``, ``create_session``, ``bind_session``, ``control`` (subscribe ``add``,
unsubscribe ``delete``, ``destroy``...), ``heartbeat``. The server answers ``WSOK``,
``CONOK``, ``SERVNAME``, ``CLIENTIP``, ``CONS``, ``REQOK``/``REQERR``, ``SUBOK``,
``UNSUB``, ``U`` updates in the compressed field encoding, ``PROBE`` keepalives and
``CONERR``/``END`` on errors.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

TLCP_SUBPROTOCOL = "TLCP-2.5.0.lightstreamer.com"
# Characters that would break the "|"-separated field list or a line, plus "%" itself.
_QUOTED = {"%": "%25", "|": "%7C", "\r": "%0D", "\n": "%0A"}
# A value that *is* one of these markers must be sent quoted.
_MARKERS = {"#": "%23", "$": "%24", "^": "%5E"}


def encode_value(value: Optional[str]) -> str:
    """Encode one changed field value: ``#`` null, ``$`` empty, else percent-quoted."""
    if value is None:
        return "#"
    value = str(value)
    if value == "":
        return "$"
    out = "".join(_QUOTED.get(ch, ch) for ch in value)
    if out[0] in _MARKERS:
        out = _MARKERS[out[0]] + out[1:]
    return out


def encode_update(previous: Optional[list], current: list) -> str:
    """Return the ``|``-joined field list of a ``U`` line, sending only what changed.

    Unchanged fields are empty; a run of two or more unchanged fields becomes ``^N``.
    """
    parts: list[str] = []
    run = 0
    for i, value in enumerate(current):
        unchanged = previous is not None and previous[i] == value
        if unchanged:
            run += 1
            continue
        parts.extend(_run(run))
        run = 0
        parts.append(encode_value(value))
    parts.extend(_run(run))
    return "|".join(parts)


def _run(count: int) -> list[str]:
    if count == 0:
        return []
    if count == 1:
        return [""]
    return [f"^{count}"]


@dataclass
class _Subscription:
    sub_id: int
    mode: str
    items: list[str]
    fields: list[str]
    last: dict[int, list] = field(default_factory=dict)  # item index -> values last sent


class TLCPSession:
    """One client session bound to one WebSocket."""

    def __init__(self, server: "TLCPServer", ws: web.WebSocketResponse, account: str):
        self.server = server
        self.ws = ws
        self.account = account
        self.session_id = "S" + secrets.token_hex(8)
        self.subscriptions: dict[int, _Subscription] = {}
        self.keepalive_task: Optional[asyncio.Task] = None
        self.transport: Optional[asyncio.BaseTransport] = None
        self.closed = False

    async def send(self, *lines: str) -> None:
        """Send lines in one frame; a dead socket just ends the session."""
        if self.closed or self.ws.closed:
            return
        try:
            await self.ws.send_str("".join(line + "\r\n" for line in lines))
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def keepalive(self, interval_s: float) -> None:
        """Send PROBE whenever the stream would otherwise be silent for ``interval_s``."""
        while not self.closed:
            await asyncio.sleep(interval_s)
            await self.send("PROBE")

    async def publish(self, item: str, values: dict) -> None:
        """Send ``values`` of ``item`` to every subscription of this session that has it."""
        for sub in list(self.subscriptions.values()):
            if item not in sub.items:
                continue
            index = sub.items.index(item) + 1
            current = [None if values.get(f) is None else str(values.get(f)) for f in sub.fields]
            previous = sub.last.get(index)
            sub.last[index] = current
            await self.send(f"U,{sub.sub_id},{index},{encode_update(previous, current)}")


class TLCPServer:
    """Accept TLCP sessions on ``/lightstreamer`` and fan item updates out to them.

    ``authenticate(user, password)`` decides who may connect (the IG simulator checks
    ``CST-...|XST-...``); ``snapshot(item)`` returns an item's current values or None
    when the item does not exist; ``valid_item(item)`` says whether it may be subscribed.
    """

    def __init__(self, authenticate: Callable[[str, str], bool],
                 snapshot: Callable[[str], Optional[dict]], valid_item: Callable[[str], bool],
                 keepalive_ms: int = 2000):
        self.authenticate = authenticate
        self.snapshot = snapshot
        self.valid_item = valid_item
        self.keepalive_ms = keepalive_ms
        self.sessions: dict[str, TLCPSession] = {}
        self.sessions_created = 0
        self.refuse_sessions = False
        # item prefix -> seconds the server takes to process a subscription to it (a slow
        # server: updates published before then do not reach the subscriber)
        self.subscription_delay: dict[str, float] = {}

    # -- HTTP entry ------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler of ``GET /lightstreamer`` (WebSocket upgrade)."""
        ws = web.WebSocketResponse(protocols=(TLCP_SUBPROTOCOL,), autoping=True)
        await ws.prepare(request)
        session: Optional[TLCPSession] = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                lines = [line for line in msg.data.split("\r\n") if line]
                if not lines:
                    continue
                verb, params = lines[0], lines[1:]
                if verb == "wsok":
                    await ws.send_str("WSOK\r\n")
                elif verb == "create_session":
                    session = await self._create(ws, _params(params[0] if params else ""))
                    if session is not None:
                        session.transport = request.transport
                elif verb == "bind_session":
                    # Sessions die with their socket here, so a rebind (recovery) finds
                    # nothing; code 20 makes the client open a fresh session.
                    await ws.send_str("CONERR,20,Session not found\r\n")
                elif verb == "control" and session is not None:
                    for line in params:
                        await self._control(session, _params(line))
                elif verb in ("heartbeat", "msg"):
                    continue
                else:
                    await ws.send_str(f"ERROR,65,Unexpected request {verb}\r\n")
        finally:
            if session is not None:
                self._forget(session)
        return ws

    async def handle_http_bind(self, request: web.Request) -> web.Response:
        """``POST /lightstreamer/bind_session.txt``: the client's session recovery over HTTP.

        Sessions die with their socket here, so recovery is never possible; code 20
        (session not found) makes the client open a fresh session over WebSocket.
        """
        await request.read()
        return web.Response(text="CONERR,20,Session not found\r\n", content_type="text/enriched")

    async def _create(self, ws: web.WebSocketResponse, params: dict) -> Optional[TLCPSession]:
        user, password = params.get("LS_user", ""), params.get("LS_password", "")
        if self.refuse_sessions:
            await ws.send_str("CONERR,5,Server busy\r\n")
            return None
        if not self.authenticate(user, password):
            await ws.send_str("CONERR,1,User/password check failed\r\n")
            return None
        session = TLCPSession(self, ws, user)
        self.sessions[session.session_id] = session
        self.sessions_created += 1
        keepalive = int(params.get("LS_keepalive_millis") or self.keepalive_ms)
        await session.send(f"CONOK,{session.session_id},50000,{keepalive},*",
                           "SERVNAME,IG Simulator", "CLIENTIP,127.0.0.1", "CONS,unlimited")
        session.keepalive_task = asyncio.ensure_future(session.keepalive(keepalive / 1000))
        return session

    async def _control(self, session: TLCPSession, params: dict) -> None:
        req_id, op = params.get("LS_reqId", ""), params.get("LS_op", "")
        if op == "add":
            sub_id = int(params["LS_subId"])
            items = params.get("LS_group", "").split()
            fields = params.get("LS_schema", "").split()
            mode = params.get("LS_mode", "MERGE")
            bad = [item for item in items if not self.valid_item(item)]
            if bad or not items or not fields:
                await session.send(f"REQERR,{req_id},21,Bad item name {bad[0] if bad else ''}".rstrip())
                return
            delay = max((d for prefix, d in self.subscription_delay.items()
                         if any(item.startswith(prefix) for item in items)), default=0.0)
            if delay:
                await asyncio.sleep(delay)
            sub = _Subscription(sub_id, mode, items, fields)
            session.subscriptions[sub_id] = sub
            await session.send(f"REQOK,{req_id}", f"SUBOK,{sub_id},{len(items)},{len(fields)}")
            if mode == "MERGE" and params.get("LS_snapshot", "false") == "true":
                for item in items:
                    values = self.snapshot(item)
                    if values:
                        await session.publish(item, values)
        elif op == "delete":
            sub_id = int(params.get("LS_subId", "0"))
            session.subscriptions.pop(sub_id, None)
            await session.send(f"REQOK,{req_id}", f"UNSUB,{sub_id}")
        elif op == "destroy":
            await session.send(f"REQOK,{req_id}", "END,31,Destroyed by client")
            self._forget(session)
            await session.ws.close()
        else:  # constrain, force_rebind, reconf: accepted, nothing to change here
            await session.send(f"REQOK,{req_id}")

    def _forget(self, session: TLCPSession) -> None:
        session.closed = True
        self.sessions.pop(session.session_id, None)
        if session.keepalive_task is not None:
            session.keepalive_task.cancel()

    # -- driving -----------------------------------------------------------------------
    async def publish(self, item: str, values: dict) -> None:
        """Send an update of ``item`` to every session subscribed to it."""
        for session in list(self.sessions.values()):
            await session.publish(item, values)

    async def drop_all(self) -> int:
        """Cut every stream without a goodbye, as a network failure would; return how many."""
        sessions = list(self.sessions.values())
        for session in sessions:
            self._forget(session)
            if session.transport is not None:
                session.transport.abort()
            else:
                await session.ws.close()
        return len(sessions)

    def subscribed_items(self) -> set[str]:
        """Every item some live session is subscribed to."""
        return {item for s in self.sessions.values() for sub in s.subscriptions.values()
                for item in sub.items}


def _params(line: str) -> dict:
    return dict(parse_qsl(line, keep_blank_values=True))
