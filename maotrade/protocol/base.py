"""The base of every bus message, and the small structures several messages carry.

A message is a ``msgspec.Struct`` tagged by its ``type`` field; its docstring is the
documentation of that message (docs/PROTOCOL.md is generated from it): the first
paragraph says what the message is for, and one ``name: meaning`` line describes each
field.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import msgspec

PROTOCOL_VERSION = 1
# Free-form maps (account info, portfolios, status documents) may nest this deep at most.
# Nothing legitimate comes near it; a deeper one is refused at decode time.
MAX_NESTING = 16


def _version() -> int:
    return PROTOCOL_VERSION


class Message(msgspec.Struct, tag_field="type", kw_only=True):
    """One bus message: ``type`` (its tag), ``v`` and its fields.

    Directions whose readers treat an absent field as its default (client requests, bars)
    leave fields at their default out of the wire (``omit_defaults``); ``v`` is always sent.
    """

    #: the message's ``type`` on the wire (its struct tag; set by ``register``).
    TYPE: ClassVar[str] = ""

    v: int = msgspec.field(default_factory=_version)


def register(*messages: type[Message]) -> tuple[type[Message], ...]:
    """Give each message class its ``TYPE``; return them (a direction's ``MESSAGES``)."""
    for cls in messages:
        cls.TYPE = cls.__struct_config__.tag
    return messages


def nesting_depth(value: Any, limit: int = MAX_NESTING) -> int:
    """Return how deep ``value`` nests lists and maps, counting no further than ``limit + 1``."""
    stack = [(value, 0)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def check_nesting(**maps: Any) -> None:
    """Raise ``ValueError`` naming the first of ``maps`` that nests deeper than ``MAX_NESTING``."""
    for name, value in maps.items():
        if value is not None and nesting_depth(value) > MAX_NESTING:
            raise ValueError(f"`{name}` nests deeper than {MAX_NESTING} levels")


class FillData(msgspec.Struct, kw_only=True):
    """One execution: ``exec_id`` makes it unique, ``qty`` is unsigned."""

    exec_id: str
    qty: float
    price: float
    time: int = 0
    commission: float = 0.0


class OrderData(msgspec.Struct, kw_only=True):
    """An order as the engine journals it (``maotrade.order.BaseOrder``'s wire form)."""

    client_order_id: str
    account: str
    epic: str
    qty: float
    epicBroker: str = ""
    order_type: str = "MARKET"
    action: str = "open"
    price: Optional[float] = None
    stop_loss: Optional[float] = None
    take_profit: Optional[float] = None
    time_in_force: str = "GTC"
    source: str = "strategy"
    parent: str = ""
    leg: str = ""
    status: str = "NEW"
    broker_ref: str = ""
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    reason: str = ""
    created: int = 0
    updated: int = 0
    fills: list[FillData] = []


def field_names(struct: type) -> tuple[str, ...]:
    """The wire fields of a message struct (``type`` and ``v`` aside)."""
    return tuple(name for name in struct.__struct_fields__ if name != "v")
