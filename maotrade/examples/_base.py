"""What the example strategies share: the net position per instrument, counted from the
fills they are told of."""
from __future__ import annotations

from maotrade.strategy import Strategy

DONE = frozenset({"FILLED", "REJECTED", "CANCELLED", "EXPIRED"})


class PositionTracking(Strategy):
    """Keeps ``positions`` (epic -> signed quantity, from every fill reported in
    ``on_order``, including stop loss / take profit closes made by the broker) and the
    order in flight per instrument (``track`` it, ``working_in`` tells)."""

    def __init__(self, params=None):
        super().__init__(params)
        self.positions: dict[str, float] = {}
        self._working: dict[str, str] = {}  # epic -> client order id in flight

    @property
    def position(self) -> float:
        """The net position in the first (or only) instrument."""
        return self.positions.get(getattr(self, "epic", ""), 0.0)

    @property
    def working(self) -> str:
        """The id of the order in flight in the first (or only) instrument, or ""."""
        return self._working.get(getattr(self, "epic", ""), "")

    @working.setter
    def working(self, client_order_id: str) -> None:
        self._working[getattr(self, "epic", "")] = client_order_id

    def position_in(self, epic: str) -> float:
        """The net position in ``epic``."""
        return self.positions.get(epic, 0.0)

    def working_in(self, epic: str) -> str:
        """The id of this strategy's order in flight in ``epic``, or ""."""
        return self._working.get(epic, "")

    def track(self, epic: str, client_order_id: str) -> None:
        """Remember ``client_order_id`` as the order in flight in ``epic``."""
        self._working[epic] = client_order_id

    def on_order(self, order: dict) -> None:
        epic = order.get("epic", "")
        fills = order.get("fills")
        if fills:
            traded = 0.0
            for fill in fills:
                traded += fill["qty"]
            self.positions[epic] = self.positions.get(epic, 0.0) + (traded if order.get("qty", 0) > 0 else -traded)
        if order.get("status") in DONE and self._working.get(epic) == order.get("client_order_id"):
            self._working[epic] = ""
