"""Parameter spaces: what a strategy declares it may be tuned on.

A strategy class declares ``param_space``, a dict from parameter name to a range::

    class MovingAverageCross(Strategy):
        param_space = {"fast": IntRange(2, 30), "slow": IntRange(10, 120, step=10),
                       "stop_loss": FloatRange(0.0, 0.02, step=0.005),
                       "mode": Choice(["long", "both"])}

Pure data: each range turns into an optuna distribution and, for a grid search, into
the list of its values (a float range needs a ``step`` for that).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from maotrade.errors import MAOTradeError


class SpaceError(MAOTradeError, ValueError):
    """A parameter space is missing or makes no sense (names the parameter)."""


@dataclass(frozen=True)
class IntRange:
    """Integers from ``low`` to ``high`` inclusive, every ``step``."""

    low: int
    high: int
    step: int = 1

    def values(self) -> list:
        """Every value, for a grid."""
        return list(range(self.low, self.high + 1, self.step))

    def distribution(self):
        """The optuna distribution."""
        import optuna
        return optuna.distributions.IntDistribution(self.low, self.high, step=self.step)

    def check(self, name: str) -> None:
        """Raise ``SpaceError`` if the range is empty or malformed."""
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step)):
            raise SpaceError(f"parameter {name}: IntRange takes integers")
        if self.step < 1 or self.high < self.low:
            raise SpaceError(f"parameter {name}: IntRange({self.low}, {self.high}, step={self.step}) is empty")


@dataclass(frozen=True)
class FloatRange:
    """Real numbers from ``low`` to ``high``; with ``step``, only its multiples from ``low``."""

    low: float
    high: float
    step: Optional[float] = None
    log: bool = False

    def values(self) -> list:
        """Every value, for a grid (needs ``step``)."""
        if self.step is None:
            raise SpaceError(f"FloatRange({self.low}, {self.high}) has no step: a grid needs one (or use --sampler tpe)")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def distribution(self):
        """The optuna distribution."""
        import optuna
        return optuna.distributions.FloatDistribution(self.low, self.high, step=self.step, log=self.log)

    def check(self, name: str) -> None:
        """Raise ``SpaceError`` if the range is empty or malformed."""
        if not self.high >= self.low or (self.step is not None and not self.step > 0):
            raise SpaceError(f"parameter {name}: FloatRange({self.low}, {self.high}, step={self.step}) is empty")
        if self.log and (self.low <= 0 or self.step is not None):
            raise SpaceError(f"parameter {name}: a log FloatRange needs low > 0 and no step")


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of values (numbers, strings, booleans)."""

    options: Sequence[Any]

    def values(self) -> list:
        """Every value, for a grid."""
        return list(self.options)

    def distribution(self):
        """The optuna distribution."""
        import optuna
        return optuna.distributions.CategoricalDistribution(list(self.options))

    def check(self, name: str) -> None:
        """Raise ``SpaceError`` if there is nothing to choose."""
        if not list(self.options):
            raise SpaceError(f"parameter {name}: Choice has no options")


Range = IntRange | FloatRange | Choice


def space_of(strategy_class: type, only: Optional[Sequence[str]] = None) -> dict[str, Range]:
    """The ``param_space`` a strategy class declares (``only`` keeps some names), checked."""
    declared = getattr(strategy_class, "param_space", None)
    if not isinstance(declared, dict) or not declared:
        raise SpaceError(f"strategy {strategy_class.__name__} declares no param_space "
                         f"(a class attribute {{name: IntRange/FloatRange/Choice}})")
    names = list(only) if only else list(declared)
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise SpaceError(f"strategy {strategy_class.__name__} has no parameter {', '.join(unknown)} in its "
                         f"param_space (it has {', '.join(declared)})")
    space = {}
    for name in names:
        spec = declared[name]
        if not isinstance(spec, (IntRange, FloatRange, Choice)):
            raise SpaceError(f"parameter {name}: {spec!r} is not an IntRange, FloatRange or Choice")
        spec.check(name)
        space[name] = spec
    return space


def grid(space: dict[str, Range]) -> list[dict]:
    """Every combination of the space's values, in a fixed order (the first name varies slowest)."""
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n].values() for n in names))]


def narrow(space: dict[str, Range], text: str) -> dict[str, Range]:
    """``space`` with one range replaced as ``NAME=LOW:HIGH[:STEP]`` or ``NAME=A,B,C`` says."""
    name, sep, spec = str(text).partition("=")
    if not sep or name not in space:
        raise SpaceError(f"--range {text!r}: expected NAME=LOW:HIGH[:STEP] or NAME=A,B,C with NAME one of "
                         f"{', '.join(space)}")
    current = space[name]
    try:
        if "," in spec or isinstance(current, Choice):
            options = [_scalar(v) for v in spec.split(",")]
            replacement: Range = Choice(options)
        else:
            parts = spec.split(":")
            if len(parts) not in (2, 3):
                raise ValueError("LOW:HIGH[:STEP]")
            if isinstance(current, IntRange):
                replacement = IntRange(*(int(p) for p in parts))
            else:
                low, high = float(parts[0]), float(parts[1])
                replacement = FloatRange(low, high, float(parts[2]) if len(parts) == 3 else None)
    except ValueError as exc:
        raise SpaceError(f"--range {text!r}: {exc}") from None
    replacement.check(name)
    return {**space, name: replacement}


def _scalar(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(text.lower(), text)
