"""The equity curve of a backtest, rebuilt after the replay from the book's changes.

In a backtest, cash and positions change only when the book matches a bar, which a
typical run does on one bar in thirty or fewer. So the replay loop does not value the
account on every bar: it records a ``BookChanges`` entry (the bar's index, the cash, and
each position's quantity and average price) whenever the book acted, and
``equity_curve`` values every bar afterwards, with numpy, by the same arithmetic in the
same order the loop used: cash, plus ``(last close - average price) * quantity`` of each
open position in the order the positions were first opened. The figures are therefore
bit for bit those of a valuation made bar by bar.

One point per moment: bars of several instruments that end at the same time make one
point, dated by the first of them, valued after the last, exposed if any was.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Sequence

import numpy as np

from maotrade.positions import Position


class BookChanges:
    """Cash and positions after each bar on which the book acted (index into the timeline)."""

    __slots__ = ("indexes", "balances", "states")

    def __init__(self, balance: float):
        self.indexes: list[int] = [0]
        self.balances: list[float] = [balance]
        self.states: list[tuple] = [()]

    def record(self, index: int, balance: float, positions: dict[str, Position]) -> None:
        """Note the book's state after bar ``index`` was matched (one entry per bar)."""
        state = tuple((epic, position.qty, position.avg_price) for epic, position in positions.items())
        if self.indexes[-1] == index:
            self.balances[-1], self.states[-1] = balance, state
        else:
            self.indexes.append(index)
            self.balances.append(balance)
            self.states.append(state)


class Columns:
    """The timeline's dates, ends, closes and instruments as arrays, built once per timeline."""

    __slots__ = ("dates", "ends", "closes", "codes", "epics")

    def __init__(self, timeline: Sequence[dict], base_span_ms: dict[str, int]):
        count = len(timeline)
        self.epics = list(base_span_ms)
        code = {epic: index for index, epic in enumerate(self.epics)}
        self.dates = list(map(itemgetter("date"), timeline))
        self.closes = np.fromiter(map(itemgetter("close"), timeline), dtype=float, count=count)
        starts = np.fromiter(self.dates, dtype=np.int64, count=count)
        if len(self.epics) == 1:
            self.codes = np.zeros(count, dtype=np.intp)
            self.ends = starts + base_span_ms[self.epics[0]]
        else:
            self.codes = np.fromiter(map(code.__getitem__, map(itemgetter("epic"), timeline)), dtype=np.intp,
                                     count=count)
            spans = np.asarray([base_span_ms[epic] for epic in self.epics], dtype=np.int64)
            self.ends = starts + spans[self.codes]


def equity_curve(columns: Columns, done: int, changes: BookChanges) -> tuple[list, list, list]:
    """``(dates, equity, exposed)`` of the first ``done`` bars: one point per moment."""
    if done <= 0:
        return [], [], []
    starts = np.asarray(changes.indexes, dtype=np.intp)
    # Which recorded state holds at each bar: the last one recorded at or before it.
    segment = np.searchsorted(starts, np.arange(done), side="right") - 1
    value = np.asarray(changes.balances, dtype=float)[segment]
    held = np.zeros(done, dtype=bool)
    order: list[str] = []
    for state in changes.states:
        for epic, _, _ in state:
            if epic not in order:
                order.append(epic)
    for epic in order:
        quantities = np.zeros(len(starts))
        averages = np.zeros(len(starts))
        for row, state in enumerate(changes.states):
            for name, qty, avg in state:
                if name == epic:
                    quantities[row], averages[row] = qty, avg
        qty, avg = quantities[segment], averages[segment]
        open_ = qty != 0
        if not open_.any():
            continue
        close = _last_close(columns, epic, done)
        with np.errstate(invalid="ignore", over="ignore"):
            value = np.where(open_, value + (close - avg) * qty, value)
        held |= open_
    ends = columns.ends[:done]
    first = np.flatnonzero(np.concatenate(([True], ends[1:] != ends[:-1])))
    if len(first) == done:
        dates, equity, exposed = columns.dates[:done], value.tolist(), held.tolist()
    else:
        last = np.concatenate((first[1:] - 1, [done - 1]))
        dates = [columns.dates[index] for index in first.tolist()]
        equity, exposed = value[last].tolist(), np.logical_or.reduceat(held, first).tolist()
    initial = changes.balances[0]
    if type(initial) is not float:
        # Until the first trade the account is worth its initial balance as given (an int stays one).
        untouched = int(np.searchsorted(last if len(first) < done else np.arange(done),
                                        changes.indexes[1] if len(changes.indexes) > 1 else done))
        equity[:untouched] = [initial] * untouched
    return dates, equity, exposed


def _last_close(columns: Columns, epic: str, done: int) -> np.ndarray:
    """At each bar, the close of ``epic``'s latest bar so far (0 before its first)."""
    closes = columns.closes[:done]
    if len(columns.epics) == 1:
        return closes
    mine = columns.codes[:done] == columns.epics.index(epic)
    latest = np.maximum.accumulate(np.where(mine, np.arange(done), -1))
    return np.where(latest >= 0, closes[np.maximum(latest, 0)], 0.0)
