"""Round-trip trades from a run's fills: a trade opens when a position leaves zero and
closes when it returns to zero (a fill that crosses zero closes one trade and opens the
next). Commission is shared out in proportion to quantity. A trade's exit reason is that
of the fill that closed it: ``signal`` (the strategy closed or reversed), ``stop loss``,
``take profit`` (the broker's bracket) or ``end`` (still open when the data ended, valued
at the last close)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Optional

from maotrade.positions import EPSILON, Position

EXIT_SIGNAL = "signal"
EXIT_STOP_LOSS = "stop loss"
EXIT_TAKE_PROFIT = "take profit"
EXIT_END = "end"


@dataclass
class Trade:
    """One round trip in one instrument."""

    epic: str
    side: str  # long / short
    qty: float  # largest absolute position held
    entry_time: int
    entry_price: float  # average of the opening fills
    exit_time: Optional[int] = None
    exit_price: Optional[float] = None  # average of the closing fills
    pnl: float = 0.0  # realized, before commission
    commission: float = 0.0
    exit_reason: str = ""
    _in_qty: float = 0.0
    _out_qty: float = 0.0
    _out_value: float = 0.0

    @property
    def net_pnl(self) -> float:
        """Realized P&L less commission."""
        return self.pnl - self.commission

    @property
    def is_closed(self) -> bool:
        """True once the position went back to zero."""
        return self.exit_time is not None

    def to_dict(self) -> dict:
        """The trade as a flat dict (the CSV row)."""
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        data["net_pnl"] = self.net_pnl
        data["duration_s"] = (self.exit_time - self.entry_time) / 1000 if self.is_closed else None
        return data


def build_trades(fills: Iterable[tuple]) -> list[Trade]:
    """Trades from fills ``(epic, signed qty, price, time, commission[, exit reason])`` in
    execution order; the last trade of an instrument may still be open."""
    positions: dict[str, Position] = {}
    current: dict[str, Trade] = {}
    trades: list[Trade] = []
    for epic, qty, price, time, commission, *reason in fills:
        position = positions.setdefault(epic, Position(epic))
        closing = 0.0 if position.is_flat or (position.qty > 0) == (qty > 0) else min(abs(qty), abs(position.qty))
        opening = abs(qty) - closing
        trade = current.get(epic)
        realized = position.apply_fill(qty, price)
        if closing > EPSILON and trade is not None:
            trade.pnl += realized
            trade.commission += commission * closing / abs(qty)
            trade._out_value += price * closing
            trade._out_qty += closing
            if position.is_flat or opening > EPSILON:
                trade.exit_time, trade.exit_price = time, trade._out_value / trade._out_qty
                trade.exit_reason = reason[0] if reason else EXIT_SIGNAL
                del current[epic]
        if opening > EPSILON:
            trade = current.get(epic)
            if trade is None:
                trade = Trade(epic, "long" if qty > 0 else "short", 0.0, time, price)
                current[epic] = trade
                trades.append(trade)
            trade.entry_price = (trade.entry_price * trade._in_qty + price * opening) / (trade._in_qty + opening)
            trade._in_qty += opening
            trade.commission += commission * opening / abs(qty)
            trade.qty = max(trade.qty, abs(position.qty))
    return trades
