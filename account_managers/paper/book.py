"""The paper broker's matching book now lives in ``maotrade.matching`` (the backtester
shares it); this name stays for code that imported it from here."""
from maotrade.matching import Event, PaperBook, Quote

__all__ = ["Event", "PaperBook", "Quote"]
