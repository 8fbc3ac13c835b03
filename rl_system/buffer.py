"""Replay-buffer policy with exact accounting; the Ray actor stores ObjectRefs in it as payloads.

Every group that enters ends in exactly one of: still held, sampled (then trained), or
dropped with a reason. `check()` asserts that bookkeeping.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any


class GroupLedger:
    def __init__(self, capacity: int, max_staleness: int):
        self.capacity, self.max_staleness = capacity, max_staleness
        self._items: OrderedDict[tuple, tuple[int, Any]] = OrderedDict()
        self.counts: Counter = Counter()
        self.last_sample_lags: list[int] = []

    def add(self, key: tuple, version: int, payload: Any) -> None:
        if key in self._items:
            raise ValueError(f"group {key} was added twice")
        self._items[key] = (version, payload)
        self.counts["added"] += 1
        while len(self._items) > self.capacity:  # oldest out first, counted
            self._items.popitem(last=False)
            self.counts["dropped_overflow"] += 1

    def sample(self, n: int, learner_version: int) -> list[tuple[tuple, Any]]:
        """Up to n groups, oldest first, after dropping any more than max_staleness versions old."""
        for key, (version, _) in list(self._items.items()):
            if learner_version - version > self.max_staleness:
                del self._items[key]
                self.counts["dropped_stale"] += 1
        keys = list(self._items)[:n]
        self.last_sample_lags = [learner_version - self._items[k][0] for k in keys]
        batch = [(k, self._items.pop(k)[1]) for k in keys]
        self.counts["sampled"] += len(batch)
        return batch

    def acknowledge(self, num_trained: int) -> None:
        self.counts["trained"] += num_trained

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        dropped = self.counts["dropped_overflow"] + self.counts["dropped_stale"]
        return {"size": len(self), "added": self.counts["added"], "sampled": self.counts["sampled"],
                "trained": self.counts["trained"], "dropped_overflow": self.counts["dropped_overflow"],
                "dropped_stale": self.counts["dropped_stale"], "in_flight": self.counts["sampled"] - self.counts["trained"],
                "dropped": dropped}

    def check(self) -> None:
        s = self.stats()
        if s["added"] != s["size"] + s["sampled"] + s["dropped"] or s["in_flight"] < 0:
            raise AssertionError(f"buffer accounting broken: {s}")
