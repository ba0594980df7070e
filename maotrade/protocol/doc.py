"""Render the message tables of docs/PROTOCOL.md from the structs' docstrings.

A message's docstring says what it is for in its first paragraph and describes each
field on a line ``name: meaning``. ``field_docs`` reads that, ``problems`` lists every
field without a line and every line naming no field, and ``render_table`` writes one
direction's table. ``scripts/protocol_doc`` writes the tables into docs/PROTOCOL.md,
between the markers ``update`` looks for.
"""
from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any, Literal, Union

import msgspec

from maotrade.protocol.codec import Channel

_FIELD_LINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*): (?P<text>.+)$")
BEGIN = "<!-- generated from maotrade/protocol ({name}) by scripts/protocol_doc: edit the docstrings there -->"
END = "<!-- end of generated table -->"
_SCALARS = {str: "string", int: "integer", float: "number", bool: "bool", bytes: "binary", type(None): "null"}


def summary(struct: type) -> str:
    """The first paragraph of a message's docstring, on one line."""
    return " ".join(inspect.getdoc(struct).split("\n\n")[0].split())


def field_docs(struct: type) -> dict[str, str]:
    """The ``name: meaning`` lines of a message's docstring (and its bases'), by field name."""
    docs: dict[str, str] = {}
    for cls in reversed(struct.__mro__):
        if cls.__doc__ is None or not cls.__module__.startswith("maotrade.protocol"):
            continue
        paragraphs = inspect.cleandoc(cls.__doc__).split("\n\n")[1:]
        for line in "\n".join(paragraphs).splitlines():
            match = _FIELD_LINE.match(line.strip())
            if match:
                docs[match["name"]] = match["text"]
    return docs


def wire_fields(struct: type) -> tuple[str, ...]:
    """The fields a message carries besides ``type`` and ``v``."""
    return tuple(name for name in struct.__struct_fields__ if name != "v")


def problems(channel: Channel) -> list[str]:
    """Every undocumented field and every documented name that is not a field, in one line each."""
    found = []
    for struct in channel.messages:
        fields, docs = set(wire_fields(struct)), field_docs(struct)
        found += [f"{struct.TYPE}: field `{name}` is not documented" for name in sorted(fields - docs.keys())]
        found += [f"{struct.TYPE}: documents `{name}`, which is not a field" for name in sorted(docs.keys() - fields)]
        if not summary(struct):
            found.append(f"{struct.TYPE}: no description")
    return found


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``string``, ``integer or null``, ``list``..."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(annotation))
    if origin is list:
        return "list"
    if origin is dict or annotation is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return "map"
    return str(annotation)


def describe_fields(struct: type) -> str:
    """One table cell: every field with its type, whether it is required, and its meaning."""
    hints = typing.get_type_hints(struct)
    info = {field.name: field for field in msgspec.structs.fields(struct)}
    docs = field_docs(struct)
    parts = []
    for name in wire_fields(struct):
        field = info[name]
        kind = type_name(hints[name])
        if field.required:
            kind += ", required"
        elif field.default not in (None, msgspec.NODEFAULT) and not isinstance(field.default, (dict, list)):
            kind += f", default `{msgspec.json.encode(field.default).decode()}`"
        parts.append(f"`{name}` ({kind}): {docs.get(name, '')}")
    return "; ".join(parts) if parts else "none"


def render_table(channel: Channel) -> str:
    """The markdown table of one direction: type, fields, what the message is for."""
    lines = ["| type | fields | what for |", "| --- | --- | --- |"]
    for struct in channel.messages:
        cell = describe_fields(struct).replace("|", "\\|")
        lines.append(f"| `{struct.TYPE}` | {cell} | {summary(struct).replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def update(text: str, channels: tuple[Channel, ...]) -> str:
    """Return ``text`` with each channel's generated table replaced by a fresh rendering.

    ``ValueError`` if a channel's markers are missing.
    """
    for channel in channels:
        begin = BEGIN.format(name=channel.name)
        start = text.find(begin)
        end = text.find(END, start)
        if start < 0 or end < 0:
            raise ValueError(f"docs/PROTOCOL.md has no generated table for {channel.name}: add the line {begin!r} "
                             f"and {END!r} where it belongs")
        text = text[:start] + begin + "\n" + render_table(channel) + "\n" + text[end:]
    return text
