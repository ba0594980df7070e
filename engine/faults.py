"""Failpoints: named places where a fault-injection test can make this process die.

``MAOTRADE_FAILPOINTS="after_journal=3,before_fill_apply=1"`` makes the process SIGKILL
itself the 3rd time it passes ``after_journal`` (or the 1st time it passes
``before_fill_apply``). Unset (always, outside tests), a failpoint costs one dict lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "MAOTRADE_FAILPOINTS"

# Every failpoint the engine has, in the order an order's life passes them.
POINTS = ("before_journal", "after_journal", "after_dispatch", "before_fill_apply", "after_fill_apply")


def _parse(text: str) -> dict[str, int]:
    points = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r}; known: {', '.join(POINTS)}")
        points[name] = int(count or 1)
    return points


_armed = _parse(os.environ.get(ENV, ""))


def failpoint(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if the test armed this point and its count is reached."""
    if name in _armed:
        _armed[name] -= 1
        if _armed[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
