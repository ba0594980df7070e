"""The engine's console lines: one format, and closes the broker made read as what they are."""
import io
import re

from engine.console import ConsolePrinter

FILLED_LEG = {"type": "order", "client_order_id": "s-abc123/SL", "qty": -1000, "filled_qty": -1000,
              "avg_fill_price": 1.08512, "epic": "EURUSD", "order_type": "STOP", "action": "close",
              "source": "engine", "status": "FILLED", "reason": ""}


def test_a_bracket_leg_fill_names_the_leg_and_its_parent():
    line = ConsolePrinter().format(FILLED_LEG)
    assert line == ("EURUSD stop loss of order s-abc123 hit: the broker closed the position, sold 1000 @ 1.08512")
    take = ConsolePrinter().format({**FILLED_LEG, "client_order_id": "s-abc123/TP", "order_type": "LIMIT"})
    assert take.startswith("EURUSD take profit of order s-abc123 hit")
    cancelled = ConsolePrinter().format({**FILLED_LEG, "client_order_id": "s-abc123/TP", "status": "CANCELLED",
                                         "filled_qty": 0, "reason": "sibling filled"})
    assert cancelled == "EURUSD take profit of order s-abc123 cancelled (sibling filled)"
    assert ConsolePrinter().format({**FILLED_LEG, "status": "ACCEPTED", "filled_qty": 0}) is None


def test_a_close_the_broker_made_on_its_own_is_described_plainly():
    line = ConsolePrinter().format({**FILLED_LEG, "client_order_id": "pb-xyz", "source": "broker",
                                    "reason": "take profit", "qty": 500, "filled_qty": 500})
    assert line == "EURUSD take profit hit: the broker closed the position, bought 500 @ 1.08512"


def test_lines_have_the_console_format_and_quiet_keeps_only_what_needs_a_person():
    stream = io.StringIO()
    quiet = ConsolePrinter(stream=stream, quiet=True)
    quiet({"type": "market_data", "epic": "EURUSD", "time_frame": 1, "completed": True, "open": 1, "high": 1,
           "low": 1, "close": 1})
    quiet({**FILLED_LEG})
    quiet({**FILLED_LEG, "client_order_id": "s-1", "status": "REJECTED", "reason": "market closed", "filled_qty": 0})
    quiet({"type": "account_status", "account": "1", "broker": "paper", "state": "disconnected", "reason": "bad key"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING order s-1 SELL 1000 EURUSD STOP \(close, engine\): REJECTED "
                        r"- market closed", lines[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d ERROR account 1 \[paper\]: disconnected \(bad key\)", lines[1])
