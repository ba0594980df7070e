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

    @property
    def bid(self) -> float:
        """Price at which the broker buys from us."""
        return self.mid * (1 - self.spread / 2)

    @property
    def ask(self) -> float:
        """Price at which the broker sells to us."""
        return self.mid * (1 + self.spread / 2)
