import pytest

from rl_system.buffer import GroupLedger


def test_every_group_is_accounted_for():
    ledger = GroupLedger(capacity=4, max_staleness=1)
    for pid in range(6):  # two over capacity: the two oldest are dropped
        ledger.add((pid, 0), 0, f"g{pid}")
    ledger.check()
    assert ledger.stats()["dropped_overflow"] == 2
    batch = ledger.sample(3, learner_version=1)
    assert [k for k, _ in batch] == [(2, 0), (3, 0), (4, 0)]
    assert ledger.last_sample_lags == [1, 1, 1]
    ledger.acknowledge(3)
    ledger.add((9, 2), 2, "g9")
    assert ledger.sample(5, learner_version=2) == [((9, 2), "g9")]  # (5, 0) is 2 versions old: dropped
    ledger.acknowledge(1)
    s = ledger.stats()
    assert s == {"size": 0, "added": 7, "sampled": 4, "trained": 4, "dropped_overflow": 2, "dropped_stale": 1,
                 "in_flight": 0, "dropped": 3}
    ledger.check()


def test_on_policy_staleness_zero_drops_anything_older():
    ledger = GroupLedger(capacity=8, max_staleness=0)
    ledger.add((0, 0), 0, "old")
    ledger.add((1, 1), 1, "new")
    assert [k for k, _ in ledger.sample(8, learner_version=1)] == [(1, 1)]
    assert ledger.stats()["dropped_stale"] == 1


def test_duplicate_group_is_refused():
    ledger = GroupLedger(capacity=8, max_staleness=0)
    ledger.add((0, 0), 0, "a")
    with pytest.raises(ValueError, match="added twice"):
        ledger.add((0, 0), 0, "a")
