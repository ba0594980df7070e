"""Historical data pacing (pure)."""
from account_managers.ib.throttle import HistoricalPacer


def test_identical_request_waits_fifteen_seconds():
    pacer = HistoricalPacer()
    pacer.record(100.0, "SPY", ("SPY", 60, 5))
    assert pacer.delay(101.0, "SPY", ("SPY", 60, 5)) == 14.0
    assert pacer.delay(101.0, "SPY", ("SPY", 60, 6)) == 0.0
    assert pacer.delay(115.0, "SPY", ("SPY", 60, 5)) == 0.0


def test_same_contract_limit_in_two_seconds():
    pacer = HistoricalPacer(same_contract_2s=2)
    pacer.record(10.0, "SPY", ("a",))
    pacer.record(10.5, "SPY", ("b",))
    assert pacer.delay(11.0, "SPY", ("c",)) == 1.0
    assert pacer.delay(11.0, "AAPL", ("c",)) == 0.0


def test_sixty_per_ten_minutes():
    pacer = HistoricalPacer(per_10min=3, same_contract_2s=99)
    for i in range(3):
        pacer.record(float(i * 10), f"C{i}", (i,))
    assert pacer.delay(30.0, "X", ("x",)) == 570.0
    assert pacer.delay(600.0, "X", ("x",)) == 0.0
