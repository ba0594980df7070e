"""Counters the fault-injection suite fills, printed at the end of a test run."""
from collections import Counter

totals: Counter = Counter()


def record(faults: int = 0, orders: int = 0, discrepancies: int = 0) -> None:
    """Add to the run's totals: faults injected, orders checked against the broker's record,
    and discrepancies found between the two (every check asserts this stays zero)."""
    totals["faults"] += faults
    totals["orders"] += orders
    totals["discrepancies"] += discrepancies
