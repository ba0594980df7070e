"""Trials go to Dask workers in a few chunks per worker, in order, none lost or repeated."""
from maotrade.optimize.executors import chunks


def test_chunks_keep_every_trial_in_order_and_are_as_even_as_can_be():
    trials = list(range(23))
    parts = chunks(trials, 4)
    assert [t for part in parts for t in part] == trials
    assert sorted(len(part) for part in parts) == [5, 6, 6, 6]


def test_fewer_trials_than_chunks_gives_one_trial_per_chunk():
    assert chunks([1, 2], 8) == [[1], [2]]
    assert chunks([], 4) == []
