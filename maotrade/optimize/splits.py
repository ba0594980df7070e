"""Walk-forward splits: consecutive windows, each an in-sample part followed by an out-of-sample part.

The bars are cut into ``windows`` equal consecutive segments; in each, the first
``1 - oos_fraction`` of the bars are in-sample (the optimiser sees their results) and the
rest out-of-sample (reported, never optimised on). A parameter set that only fits noise
scores well in-sample and poorly out-of-sample: the gap is the overfitting.
"""
from __future__ import annotations

from dataclasses import dataclass

from maotrade.errors import MAOTradeError

MIN_BARS_PER_PART = 50


class SplitError(MAOTradeError, ValueError):
    """The data cannot be split as asked."""


@dataclass(frozen=True)
class Window:
    """Bar indexes ``[start, split)`` in-sample and ``[split, end)`` out-of-sample."""

    start: int
    split: int
    end: int


def walk_forward(bar_count: int, windows: int, oos_fraction: float) -> list[Window]:
    """The walk-forward windows over ``bar_count`` bars."""
    if windows < 1:
        raise SplitError(f"walk-forward needs at least one window, got {windows}")
    if not 0 < oos_fraction < 1:
        raise SplitError(f"the out-of-sample fraction must be between 0 and 1, got {oos_fraction}")
    size = bar_count // windows
    out = []
    for index in range(windows):
        start = index * size
        end = bar_count if index == windows - 1 else start + size
        split = start + int(round((end - start) * (1 - oos_fraction)))
        if split - start < MIN_BARS_PER_PART or end - split < MIN_BARS_PER_PART:
            raise SplitError(f"{bar_count} bars in {windows} window(s) leave fewer than {MIN_BARS_PER_PART} bars "
                             f"in a part: use fewer windows or more data")
        out.append(Window(start, split, end))
    return out
