"""Position arithmetic shared by the engine, the paper broker and the backtester.

A net position per instrument: signed ``qty``, ``avg_price`` of the open quantity,
and ``realized_pnl`` accumulated as it is reduced. P&L is in price units times
quantity (one point of price per unit of quantity); a broker whose contracts have a
multiplier reports its own figures in account_info.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

EPSILON = 1e-9


@dataclass
class Position:
    """A net position in one instrument."""

    epic: str
    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0

    @property
    def is_flat(self) -> bool:
        """True when nothing is held."""
        return -EPSILON < self.qty < EPSILON

    def apply_fill(self, qty: float, price: float) -> float:
        """Apply a signed fill; return the P&L it realized.

        Adding to a position moves the average price; reducing realizes P&L against it;
        a fill that crosses zero closes the old side and opens the rest at ``price``.
        """
        size = abs(qty)
        if size < EPSILON:
            return 0.0
        realized = 0.0
        held = self.qty
        if -EPSILON < held < EPSILON or (held > 0) == (qty > 0):
            total = held + qty
            self.avg_price = (self.avg_price * abs(held) + price * size) / abs(total)
            self.qty = total
        else:
            closing = min(size, abs(held))
            direction = 1 if held > 0 else -1
            realized = (price - self.avg_price) * closing * direction
            remainder = size - closing
            self.qty = held = held + qty
            if -EPSILON < held < EPSILON:
                self.qty, self.avg_price = 0.0, 0.0
            elif remainder > EPSILON:
                self.avg_price = price
        self.realized_pnl += realized
        return realized

    def unrealized_pnl(self, price: float) -> float:
        """Return the open P&L at ``price``."""
        if self.is_flat or price is None:
            return 0.0
        return (price - self.avg_price) * self.qty

    def to_dict(self, price: float | None = None) -> dict:
        """Return the position as a wire dict, with market price and open P&L if known."""
        data = asdict(self)
        data["market_price"] = price
        data["unrealized_pnl"] = self.unrealized_pnl(price) if price is not None else 0.0
        return data
