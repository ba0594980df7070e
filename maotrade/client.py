"""A client of the engine's ROUTER socket: what strategies, the CLI and scripts use.

One DEALER socket. Outgoing messages queue with ``put`` and leave as one frame on
``flush``; ``request`` sends one message and waits for the answer of a given type.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import msgspec
import zmq

from maotrade.errors import ConfigError, ProtocolError, TemporaryError
from maotrade.messages import unpack_batch
from maotrade.protocol.bar_block import expand_blocks
from maotrade.protocol import MAX_FRAME_BYTES, TO_CLIENT, Message, encode, from_client, to_client

Request = Union[Message, dict]  # a from_client struct (maps: for code not converted yet)


CLIENT_RCVHWM = 8  # frames (of at most a few thousand messages each)
RECEIVE_BATCH = 10_000  # messages one receive() returns, about (a frame is never split)
ENGINE_FILE = "engine.json"  # written by a running engine into its data directory


def engine_info(data_dir: Union[str, Path]) -> dict:
    """What the engine running on ``data_dir`` wrote into its engine.json (address, pid, accounts).

    Raises ``ConfigError`` naming the directory when no engine runs there, or the file
    when it is not an engine.json.
    """
    path = Path(data_dir).expanduser() / ENGINE_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no engine is running on {data_dir} (no {ENGINE_FILE})") from None
    except (OSError, ValueError):
        raise ConfigError(f"{path} is not an {ENGINE_FILE} written by a running engine") from None
    if not isinstance(info, dict) or not isinstance(info.get("client_address"), str):
        raise ConfigError(f"{path} is not an {ENGINE_FILE} written by a running engine")
    return info


def engine_address(data_dir: Union[str, Path]) -> str:
    """The bus address of the engine running on ``data_dir``."""
    return engine_info(data_dir)["client_address"]


class EngineClient:
    """Connection to a running engine (one owner thread)."""

    def __init__(self, address: str, name: str = "", ctx: Optional[zmq.Context] = None,
                 curve: Optional[dict] = None, check_types: bool = False):
        """Connect to ``address``. Over tcp, ``curve`` is required: ``{"server_public":
        bytes, "public": bytes, "secret": bytes}`` (Z85 keys, as made by ``maotrade keys``).

        With ``check_types`` every frame is also decoded into the ``to_client`` structs and
        what does not fit them is kept in ``refused`` (one line each): a conformance check
        of the engine for tests and tools, off by default because it costs a second decode."""
        self.address = address
        self.name = name
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self.socket.setsockopt(zmq.LINGER, 2000)
        # A bounded queue: a client that reads slowly pushes back on the engine, which then
        # conflates its market data instead of buffering without limit.
        self.socket.setsockopt(zmq.RCVHWM, CLIENT_RCVHWM)
        if curve:
            self.socket.curve_serverkey = curve["server_public"]
            self.socket.curve_publickey = curve["public"]
            self.socket.curve_secretkey = curve["secret"]
        self.socket.connect(address)
        self._outbox: list[dict] = []
        self._inbox: list[dict] = []
        self.malformed = 0
        self.check_types = check_types
        self.refused: list[str] = []
        self._request_ids = itertools.count(1)

    def put(self, msg: Request) -> None:
        """Queue a message (a ``maotrade.protocol.from_client`` struct) for the next flush."""
        self._outbox.append(msg)

    def flush(self) -> None:
        """Send what is queued as one frame (blocks only if the engine is not reading)."""
        if self._outbox:
            frame = encode(self._outbox)
            self._outbox = []
            self.socket.send(frame)

    def send(self, msg: Request) -> None:
        """Send one message now."""
        self.put(msg)
        self.flush()

    def receive(self, timeout_ms: int = 0) -> list[dict]:
        """Return messages received, waiting up to ``timeout_ms`` for the first one.

        At most about ``RECEIVE_BATCH`` messages are returned at a time (what is left is
        returned by the next call), so a fast stream never piles up in memory here."""
        out, self._inbox = self._inbox, []
        if not out and timeout_ms and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return out
        while len(out) < RECEIVE_BATCH:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                out.extend(expand_blocks(unpack_batch(frame)))
            except ProtocolError:
                self.malformed += 1
                continue
            if self.check_types:
                self.refused.extend(r.reason for r in TO_CLIENT.decode(frame).refused)
        return out

    def request(self, msg: Request, answer_type: str, timeout: float = 5.0,
                match: Optional[Callable[[dict], bool]] = None, before: Iterable[Request] = ()) -> dict:
        """Send ``before`` and then ``msg``; return the engine's answer of ``answer_type`` to ``msg``.

        Each message gets a fresh ``request_id`` (unless it has one), which the engine
        echoes in what it sends while handling it. The answer is the first message of
        ``answer_type`` carrying ``msg``'s id (and passing ``match``, when given), so a late
        answer to an earlier request that timed out never passes for this one. Everything
        else received meanwhile is kept for ``receive``. Raises ``ProtocolError`` with the
        engine's reason when it refused ``msg`` or any of ``before`` (an ``error``, or for a
        request about an order, that order with ``error``), ``TemporaryError`` when no
        answer came within ``timeout`` seconds.
        """
        earlier = set()
        for extra in before:
            extra = self._numbered(extra)
            earlier.add(_request_id(extra))
            self.put(extra)
        msg = self._numbered(msg)
        request_id, kind = _request_id(msg), _type(msg)
        self.send(msg)
        deadline = time.monotonic() + timeout
        kept: list[dict] = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TemporaryError(f"engine at {self.address} did not answer {kind} within {timeout:g}s")
                for item in self.receive(int(remaining * 1000) or 1):
                    answers = item.get("request_id")
                    if answers == request_id and item.get("type") == answer_type and (match is None or match(item)):
                        return item
                    if item.get("type") == to_client.Error.TYPE and (answers == request_id or answers in earlier):
                        raise ProtocolError(f"engine refused {item.get('request')}: {item.get('reason')}")
                    if item.get("type") == to_client.Order.TYPE and item.get("error") and answers in earlier:
                        raise ProtocolError(f"engine refused {item.get('request')}: {item.get('error')}")
                    kept.append(item)
        finally:
            self._inbox = kept + self._inbox

    def _numbered(self, msg: Request) -> Request:
        """``msg`` with a ``request_id`` of its own (a copy when one is added)."""
        if _request_id(msg) is not None:
            return msg
        if isinstance(msg, Message):
            return msgspec.structs.replace(msg, request_id=next(self._request_ids))
        return {**msg, "request_id": next(self._request_ids)}

    def hello(self, timeout: float = 30.0, **fields) -> dict:
        """Introduce this client (``fields`` add to the hello message, e.g. ``acks_replay``);
        return the engine's welcome (accounts and their states)."""
        return self.request(from_client.Hello(name=self.name, **fields), to_client.Welcome.TYPE, timeout)

    def close(self, linger_ms: int = 1000) -> None:
        """Say goodbye and close the socket (idempotent).

        ``linger_ms`` bounds how long unsent messages may delay closing; use 0 when the
        engine is known to be gone.
        """
        if self.socket.closed:
            return
        if linger_ms:
            # Goodbye is a courtesy: an engine that is gone or busy does not need it.
            with contextlib.suppress(zmq.ZMQError):
                self.socket.send(encode([from_client.Bye()]), zmq.NOBLOCK)
        self.socket.close(linger=linger_ms)
        if self._own_ctx:
            self.ctx.term()


def _request_id(msg: Request):
    return msg.request_id if isinstance(msg, Message) else msg.get("request_id")


def _type(msg: Request) -> str:
    return msg.TYPE if isinstance(msg, Message) else msg.get("type")
