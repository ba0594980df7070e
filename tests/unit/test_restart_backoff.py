"""The supervisor's restart backoff: 0.5 s doubling to 30 s, reset by 30 s of stable running."""
from engine.supervisor import RESTART_BACKOFF_MAX, STABLE_AFTER, restart_backoff


def test_backoff_doubles_to_its_cap_while_the_worker_keeps_dying_young():
    failures, delays = 0, []
    for _ in range(9):
        failures, delay = restart_backoff(failures, ran_s=1.0)
        delays.append(delay)
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_a_worker_that_outlived_the_longest_wait_starts_again_from_half_a_second():
    assert STABLE_AFTER == RESTART_BACKOFF_MAX
    failures, delay = restart_backoff(6, ran_s=STABLE_AFTER)
    assert (failures, delay) == (1, 0.5)
    failures, delay = restart_backoff(6, ran_s=STABLE_AFTER - 0.1)
    assert (failures, delay) == (7, 30)
