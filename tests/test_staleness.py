"""The stale-data monitor (pure: times are given)."""
from engine.staleness import StaleDataMonitor, tolerance


def test_goes_stale_after_tolerance_and_clears_on_data():
    monitor = StaleDataMonitor()
    key = ("1", "EURUSD", 1)
    monitor.watch(key, now=100.0)
    assert tolerance(1) == 7.0 and tolerance(60) == 125.0
    assert monitor.check(106.9) == []
    [(stale_key, silent)] = monitor.check(107.5)
    assert stale_key == key and silent == 7.5
    assert monitor.check(200.0) == [], "a stale subscription is reported once"
    assert monitor.stale("1") == [{"epic": "EURUSD", "time_frame": 1}]
    assert monitor.seen(key, 201.0) is True
    assert monitor.seen(key, 202.0) is False
    assert monitor.stale("1") == []


def test_unwatched_and_restarted_subscriptions():
    monitor = StaleDataMonitor()
    monitor.watch(("1", "A", 60), now=0.0)
    monitor.watch(("2", "A", 60), now=0.0)
    monitor.restart("1", now=100.0)
    assert [k for k, _ in monitor.check(130.0)] == [("2", "A", 60)]
    monitor.unwatch(("1", "A", 60))
    assert monitor.check(1000.0) == []
