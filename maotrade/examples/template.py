"""Breakout: a strategy template (``maotrade new-strategy NAME`` copies this file).

Buy when a bar closes above the highest high of the ``entry_bars`` bars before it; close
when a bar closes below the lowest low of the ``exit_bars`` bars before it. Every order
carries a stop loss ``stop_loss`` (a fraction of price) below the entry.

Try it on the sample data shipped with MAOTrade:

    maotrade backtest --strategy THIS_FILE.py:Breakout --sample --epic EURUSD --time-frame 60

then live on the paper broker:

    maotrade start --account 123 --strategy THIS_FILE.py:Breakout --param epic=EURUSD

Parameters come from ``--param KEY=VALUE`` (values parsed as JSON) into ``self.params``;
``maotrade backtest`` also passes ``epic`` and ``time_frame`` from its options.
"""
from __future__ import annotations

import re
from collections import deque
from pathlib import Path

from maotrade.strategy import Strategy

DONE = ("FILLED", "REJECTED", "CANCELLED", "EXPIRED")


class Breakout(Strategy):
    """Channel breakout on completed bars of one instrument."""

    def on_start(self) -> None:
        """Read the parameters, check them, subscribe. Raise ValueError for a bad one:
        the backtest and the engine then stop with that message."""
        p = self.params
        self.epic = p.get("epic", "EURUSD")
        self.time_frame = int(p.get("time_frame", 60))
        self.qty = float(p.get("qty", 1000))
        self.entry_bars = int(p.get("entry_bars", 20))
        self.exit_bars = int(p.get("exit_bars", 10))
        self.stop_loss = float(p.get("stop_loss", 0.003))
        if self.entry_bars < 1 or self.exit_bars < 1:
            raise ValueError(f"entry_bars and exit_bars must be >= 1, got {self.entry_bars} and {self.exit_bars}")
        if not 0 <= self.stop_loss < 1:
            raise ValueError(f"stop_loss is a fraction of price in [0, 1), got {self.stop_loss}")
        # The highs and lows of the last bars (a deque drops the oldest by itself).
        self.highs: deque = deque(maxlen=self.entry_bars)
        self.lows: deque = deque(maxlen=self.exit_bars)
        self.position = 0.0  # signed, counted from fills (on_order)
        self.pending = ""  # the id of our order in flight, or ""
        self.subscribe(self.epic, self.time_frame)

    def on_market_data(self, bar: dict) -> None:
        """Called with every bar: {epic, time_frame, date (ms), open, high, low, close,
        volume, completed}. Live, a forming bar arrives with completed False."""
        if not bar["completed"] or bar["epic"] != self.epic:
            return
        close = bar["close"]
        if not self.pending:
            if self.position == 0 and len(self.highs) == self.entry_bars and close > max(self.highs):
                stop = close * (1 - self.stop_loss) if self.stop_loss else None
                self.pending = self.open_order(self.epic, self.qty, stop_loss=stop)
            elif self.position > 0 and len(self.lows) == self.exit_bars and close < min(self.lows):
                self.pending = self.close_order(self.epic)
        # After the decision: the channel is that of the bars *before* this one.
        self.highs.append(bar["high"])
        self.lows.append(bar["low"])

    def on_order(self, order: dict) -> None:
        """Called on every change of our orders, and on closes the broker made (stop loss)."""
        sign = 1 if order["qty"] > 0 else -1
        for fill in order.get("fills") or []:
            self.position += sign * fill["qty"]
        if order["client_order_id"] == self.pending and order["status"] in DONE:
            self.pending = ""
        if order["status"] == "REJECTED":
            self.log.warning("order %s rejected: %s", order["client_order_id"], order.get("reason"))


TEMPLATE_CLASS = "Breakout"


def write_template(name: str, out_dir=".", force: bool = False) -> tuple[Path, str]:
    """Write this module as ``out_dir/NAME.py`` with the class renamed after ``NAME``
    (``my_breakout`` -> ``MyBreakout``); return the path and the class name."""
    stem = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.removesuffix(".py")).lower()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", stem):
        raise ValueError(f"strategy name {name!r} must be a Python identifier (letters, digits, _)")
    class_name = "".join(part.capitalize() for part in stem.split("_") if part) or "MyStrategy"
    path = Path(out_dir) / f"{stem}.py"
    if path.exists() and not force:
        raise ValueError(f"{path} already exists (--force to overwrite)")
    source = Path(__file__).read_text()
    source = source[:source.index("\n\nTEMPLATE_CLASS = ")] + "\n"  # the strategy only, not this helper
    source = source.replace("import re\n", "").replace("from pathlib import Path\n", "")
    source = source.replace(f"class {TEMPLATE_CLASS}(", f"class {class_name}(")
    source = source.replace("THIS_FILE.py:Breakout", f"{stem}.py:{class_name}")
    source = source.replace('"""Breakout: a strategy template (``maotrade new-strategy NAME`` copies this file).',
                            f'"""{class_name}: written by ``maotrade new-strategy``; make it yours.')
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return path, class_name
