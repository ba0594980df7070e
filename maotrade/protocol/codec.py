"""Frames to typed messages and back: where malformed input is refused.

A frame is one msgpack array of message maps. ``Channel.decode`` refuses a frame whole
when it is not that (undecodable bytes, too large, nested too deep, not an array, an
item that is not a map); inside a good frame each message is decoded into its struct on its own, so one
malformed message (unknown ``type``, a field of the wrong type, a required field
missing, a free-form map nested too deep) is refused with a one-line reason while the
others are delivered.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, NamedTuple, Union

import msgspec

from maotrade.errors import ProtocolError
from maotrade.protocol.base import Message

# A frame larger than this is refused unread: no legitimate batch comes near it.
# Every socket also sets it as ZMQ_MAXMSGSIZE, so libzmq drops a peer that claims more
# before buffering it (even before a Curve handshake completes).
MAX_FRAME_BYTES = 64 * 1024 * 1024

_encoder = msgspec.msgpack.Encoder()
_split = msgspec.msgpack.Decoder(Union[list[msgspec.Raw], dict])
_untyped = msgspec.msgpack.Decoder()
# The first byte of a msgpack map: fixmap (0x80-0x8f), map 16, map 32.
_MAP_OPCODES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class _Peek(msgspec.Struct):
    type: Any = None
    request_id: Any = None


_peek_fields = msgspec.msgpack.Decoder(_Peek)
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")


class Refusal(NamedTuple):
    """One message refused at decode time: its ``type`` (if it had a string one), why, and
    its ``request_id`` (if it had one), so the answer can be correlated."""

    type: str
    reason: str
    request_id: Any = None


class Decoded(NamedTuple):
    """What one frame held: the messages that decoded, and those that were refused."""

    messages: list
    refused: list[Refusal]


def encode(messages: Iterable) -> bytes:
    """Encode messages (structs, or maps built elsewhere) as one frame."""
    return _encoder.encode(messages if isinstance(messages, list) else list(messages))


def _split_frame(frame: bytes) -> list[msgspec.Raw]:
    """Split a frame into its messages, undecoded; ``ProtocolError`` if it is not a frame."""
    try:
        parts = _split.decode(frame)
    except RecursionError:
        # msgspec recurses per nesting level; a peer must never be able to turn that
        # into an exception the receiver does not expect.
        raise ProtocolError("undecodable frame (nested too deep)") from None
    except msgspec.ValidationError:
        try:
            kind = type(_untyped.decode(frame)).__name__
        except (msgspec.DecodeError, RecursionError):
            raise ProtocolError("undecodable frame (not msgpack)") from None
        raise ProtocolError(f"frame is a {kind}, not an array of messages") from None
    except (msgspec.DecodeError, ValueError, TypeError, MemoryError, OverflowError) as exc:
        raise ProtocolError(f"undecodable frame ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(parts, dict):
        return [msgspec.Raw(frame)]  # a single map is accepted as a batch of one
    for index, part in enumerate(parts):
        if memoryview(part)[0] not in _MAP_OPCODES:
            raise ProtocolError(f"message {index} of the frame is a {type(_untyped.decode(part)).__name__}, "
                                "not a map")
    return parts


def _peek(part: msgspec.Raw) -> tuple[str, Any]:
    """The ``type`` (when a string) and ``request_id`` of a message that did not decode."""
    try:
        found = _peek_fields.decode(part)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return "", None
    kind = found.type if isinstance(found.type, str) else ""
    request_id = found.request_id if isinstance(found.request_id, (str, int)) else None
    return kind, request_id


def _reason(kind: str, exc: msgspec.ValidationError) -> str:
    match = _AT.match(str(exc))
    what, path = match["what"], (match["path"] or "").lstrip(".")
    what = what[:1].lower() + what[1:]
    if path == "type" and what.startswith("invalid value"):
        return f"unknown message type {kind!r}"
    return f"{kind or 'message'}: {what}" + (f" at `{path}`" if path else "")


class Channel:
    """One direction of the bus: the messages that travel it, and their codec."""

    def __init__(self, name: str, messages: tuple[type[Message], ...]):
        self.name = name
        self.messages = messages
        self.by_type = {cls.TYPE: cls for cls in messages}
        self._one = msgspec.msgpack.Decoder(Union[messages])  # type: ignore[valid-type]
        self._batch = msgspec.msgpack.Decoder(list[Union[messages]])  # type: ignore[valid-type]

    def decode(self, frame: bytes) -> Decoded:
        """Decode one frame into structs; ``ProtocolError`` if the frame itself is malformed."""
        if len(frame) > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
        try:
            return Decoded(self._batch.decode(frame), [])  # the common case: one call per frame
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError, TypeError,
                MemoryError, OverflowError):
            pass  # something in it is bad: decode message by message to refuse only that
        messages, refused = [], []
        for part in _split_frame(frame):
            try:
                messages.append(self._one.decode(part))
            except RecursionError:
                kind, request_id = _peek(part)
                refused.append(Refusal(kind, f"{kind or 'message'}: nested too deep", request_id))
            except msgspec.ValidationError as exc:
                kind, request_id = _peek(part)
                refused.append(Refusal(kind, _reason(kind, exc), request_id))
        return Decoded(messages, refused)

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {len(self.messages)} messages)"

