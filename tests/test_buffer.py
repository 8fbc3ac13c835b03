import pytest

from rl_system.buffer import GroupLedger, SeenKeys


def test_every_group_is_accounted_for():
    ledger = GroupLedger(capacity=4, max_staleness=1)
    for pid in range(6):  # two over capacity: the two oldest are dropped
        ledger.add(pid, 0, f"g{pid}")
    ledger.check()
    assert ledger.stats()["dropped_overflow"] == 2
    batch = ledger.sample(3, learner_version=1)
    assert [k for k, _ in batch] == [2, 3, 4]
    assert ledger.last_sample_lags == [1, 1, 1]
    assert ledger.stats()["in_flight"] == 3
    ledger.acknowledge([k for k, _ in batch])
    ledger.add(9, 2, "g9")
    assert ledger.sample(5, learner_version=2) == [(9, "g9")]  # 5 is 2 versions old: dropped
    ledger.acknowledge([9])
    s = ledger.stats()
    assert s == {"size": 0, "added": 7, "sampled": 4, "trained": 4, "released": 0, "dropped_overflow": 2,
                 "dropped_stale": 1, "dropped_duplicate": 0, "in_flight": 0, "dropped": 3}
    ledger.check()


def test_on_policy_staleness_zero_drops_anything_older():
    ledger = GroupLedger(capacity=8, max_staleness=0)
    ledger.add(0, 0, "old")
    ledger.add(1, 1, "new")
    assert [k for k, _ in ledger.sample(8, learner_version=1)] == [1]
    assert ledger.stats()["dropped_stale"] == 1


def test_a_group_is_held_and_trained_once():
    ledger = GroupLedger(capacity=8, max_staleness=0)
    assert ledger.add(0, 0, "a")
    assert not ledger.add(0, 0, "a again")  # e.g. a retried call delivering a double
    [(key, payload)] = ledger.sample(8, learner_version=0)
    assert payload == "a"
    assert not ledger.add(0, 0, "a while leased")
    ledger.acknowledge([key])
    assert not ledger.add(0, 0, "a after training")
    assert ledger.stats()["dropped_duplicate"] == 3 and ledger.stats()["trained"] == 1
    with pytest.raises(ValueError, match="not leased"):
        ledger.acknowledge([key])
    ledger.check()


def test_a_failed_train_releases_its_lease_for_the_next_sample():
    ledger = GroupLedger(capacity=8, max_staleness=1)
    for pid in range(3):
        ledger.add(pid, 0, pid)
    leased = [k for k, _ in ledger.sample(2, learner_version=0)]
    ledger.release(leased)
    ledger.check()
    assert [k for k, _ in ledger.sample(3, learner_version=0)] == [0, 1, 2]  # order kept
    ledger.acknowledge([0, 1, 2])
    assert ledger.stats()["trained"] == 3 and ledger.stats()["released"] == 2
    ledger.check()


def test_memory_stays_bounded_when_producers_outrun_the_learner():
    ledger = GroupLedger(capacity=16, max_staleness=100)
    for step in range(20):  # 10 groups arrive for each one trained
        for i in range(10):
            ledger.add(step * 10 + i, step, bytearray(1024))
        [(key, _)] = ledger.sample(1, learner_version=step)
        ledger.acknowledge([key])
        assert len(ledger) <= 16
    s = ledger.stats()
    assert s["trained"] == 20 and s["dropped_overflow"] == 200 - 20 - len(ledger)
    ledger.check()


def test_duplicate_detection_keeps_bounded_memory_and_still_refuses_old_doubles():
    """A long run's keys (sampler positions, added in order): the seen-set stays empty behind its floor,
    and a double of a key trained long ago is still refused."""
    ledger = GroupLedger(capacity=8, max_staleness=0)
    for key in range(100_000):
        assert ledger.add(key, 0, "g")
        if key % 4 == 3:
            ledger.acknowledge([k for k, _ in ledger.sample(4, learner_version=0)])
    assert len(ledger.seen) == 0 and ledger.seen.floor == 100_000
    assert not ledger.add(7, 0, "a double of a group trained 99,993 keys ago")
    assert ledger.stats()["dropped_duplicate"] == 1 and ledger.stats()["trained"] == 100_000
    ledger.check()


def test_a_key_that_never_arrives_holds_at_most_a_window_of_keys():
    seen = SeenKeys(window=4)
    for key in (0, 1, 3, 4, 5, 6):  # 2 never comes: 3..6 wait above the floor
        seen.add(key)
    assert seen.floor == 2 and len(seen) == 4
    seen.add(7)  # a fifth: the floor moves past the gap
    assert seen.floor == 8 and len(seen) == 0
    assert 2 in seen and 5 in seen and 8 not in seen  # 2, arriving after all, is refused like a double
    for key in (10, 9):  # out of order within the window is fine
        assert key not in seen
        seen.add(key)
    assert seen.floor == 8 and len(seen) == 2 and 9 in seen and 8 not in seen
