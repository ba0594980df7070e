"""The MAOTrade bus protocol: every message as a typed struct, and the wire codec.

One module per direction of traffic, each listing its messages in ``MESSAGES``:

- ``from_client``: client (strategy, CLI, REST API, script) -> engine, on the ROUTER;
- ``to_client``: engine -> client, on the ROUTER and the PUB;
- ``to_worker``: engine -> an account's worker, on its in_queue;
- ``from_worker``: worker -> engine, on the shared out_queue.

A message is built as a struct (``to_worker.OrderOpen(order=...)``) and its ``type`` on
the wire is the struct's tag (``to_worker.OrderOpen.TYPE``), so no caller spells a
message name. Each direction has a ``Channel`` whose ``decode`` turns a frame into
structs and is where malformed input is refused (see ``codec``). docs/PROTOCOL.md's
message tables are generated from the structs' docstrings (``scripts/protocol_doc``).
"""
from __future__ import annotations

from typing import Any, Iterable

import msgspec

from maotrade.protocol import from_client, from_worker, to_client, to_worker
from maotrade.protocol.base import MAX_NESTING, PROTOCOL_VERSION, FillData, Message, OrderData
from maotrade.protocol.codec import MAX_FRAME_BYTES, Channel, Decoded, Refusal, encode

FROM_CLIENT = Channel("client -> engine", from_client.MESSAGES)
TO_CLIENT = Channel("engine -> client", to_client.MESSAGES)
TO_WORKER = Channel("engine -> worker", to_worker.MESSAGES)
FROM_WORKER = Channel("worker -> engine", from_worker.MESSAGES)
CHANNELS = (FROM_CLIENT, TO_CLIENT, TO_WORKER, FROM_WORKER)


def as_dict(msg: Message) -> dict[str, Any]:
    """Return a message as the plain map it is on the wire (``type`` included; bytes stay bytes)."""
    return msgspec.to_builtins(msg, builtin_types=(bytes,))


def as_dicts(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Return messages as plain maps (for code that still handles maps)."""
    return msgspec.to_builtins(list(messages), builtin_types=(bytes,))


__all__ = ["CHANNELS", "FROM_CLIENT", "FROM_WORKER", "MAX_FRAME_BYTES", "MAX_NESTING", "PROTOCOL_VERSION",
           "TO_CLIENT", "TO_WORKER", "Channel", "Decoded", "FillData", "Message", "OrderData", "Refusal",
           "as_dict", "as_dicts", "encode", "from_client", "from_worker", "to_client", "to_worker"]
