"""Seeded random-walk prices for the paper broker (pure: no I/O, no clock)."""
from __future__ import annotations

import math
import random
import zlib


class RandomWalk:
    """Geometric random walk of one instrument's mid price, reproducible from a seed."""

    def __init__(self, epic: str, start: float, seed: int, volatility: float, spread: float):
        if start <= 0:
            raise ValueError(f"starting price of {epic} must be positive, got {start}")
        self.epic = epic
        self.mid = float(start)
        self.volatility = volatility
        self.spread = spread
        # crc32, not hash(): hash() of a str changes from one process to the next.
        self._rng = random.Random(seed * 1_000_003 + zlib.crc32(epic.encode()))

    def step(self) -> float:
        """Move the price one step; return the new mid."""
        self.mid *= math.exp(self._rng.gauss(0.0, self.volatility))
        return self.mid

    def advance(self, steps: int) -> float:
        """Move the price as ``steps`` steps would, in one draw (the sum of ``steps``
        independent steps is one step ``sqrt(steps)`` times as wide); return the new mid.
        One step draws exactly what ``step`` draws."""
        self.mid *= math.exp(self._rng.gauss(0.0, self.volatility * math.sqrt(steps)))
        return self.mid

    @property
    def bid(self) -> float:
        """Price at which the broker buys from us."""
        return self.mid * (1 - self.spread / 2)

    @property
    def ask(self) -> float:
        """Price at which the broker sells to us."""
        return self.mid * (1 + self.spread / 2)


# Slow waves the synthetic history is made of: (period in seconds, amplitude of log price).
HISTORY_WAVES = ((7 * 3600, 0.002), (86_400, 0.004), (5 * 86_400, 0.008), (31 * 86_400, 0.02))
HISTORY_NOISE = 0.0004  # amplitude of the per-bar wiggle, fraction of price


def _unit(seed: int, epic: str, moment: int, salt: int) -> float:
    """A number in [-1, 1) fixed by its arguments (the same in every process)."""
    return zlib.crc32(f"{seed}:{epic}:{moment}:{salt}".encode()) / 2**31 - 1.0


def _phases(seed: int, epic: str) -> list[float]:
    return [math.pi * (1 + _unit(seed, epic, index, 7)) for index in range(len(HISTORY_WAVES))]


def synthetic_mid(start_price: float, seed: int, epic: str, moment_ms: int, phases: list[float]) -> float:
    """The synthetic mid price of ``epic`` at ``moment_ms``: a pure function of its arguments."""
    seconds = moment_ms / 1000
    level = sum(amplitude * math.sin(2 * math.pi * seconds / period + phase)
                for (period, amplitude), phase in zip(HISTORY_WAVES, phases))
    level += HISTORY_NOISE * _unit(seed, epic, moment_ms, 0)
    return start_price * math.exp(level)


def synthetic_bars(epic: str, start_price: float, seed: int, time_frame: int, start_ms: int,
                   end_ms: int, limit: int) -> list[dict]:
    """Completed bars of ``time_frame`` seconds dated in ``[start_ms, end_ms)``, at most ``limit``.

    Each bar depends only on its date, so any two requests agree where they overlap and a
    history fetched piecewise equals the history fetched at once.
    """
    span = int(time_frame) * 1000
    phases = _phases(seed, epic)
    first = -(-start_ms // span) * span  # the first bar start at or after start_ms
    bars = []
    moment = first
    while moment < end_ms and len(bars) < limit:
        o = synthetic_mid(start_price, seed, epic, moment, phases)
        c = synthetic_mid(start_price, seed, epic, moment + span, phases)
        high = max(o, c) * (1 + HISTORY_NOISE * abs(_unit(seed, epic, moment, 1)))
        low = min(o, c) * (1 - HISTORY_NOISE * abs(_unit(seed, epic, moment, 2)))
        volume = float(100 + int(900 * abs(_unit(seed, epic, moment, 3))))
        bars.append({"epic": epic, "time_frame": int(time_frame), "date": moment, "open": o, "high": high,
                     "low": low, "close": c, "volume": volume, "completed": True})
        moment += span
    return bars
