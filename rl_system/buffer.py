"""Replay-buffer policy with exact accounting; the Ray actor stores ObjectRefs in it as payloads.

Every group that enters ends in exactly one of: held, leased (sampled, being trained), trained,
or dropped with a reason. A sample leases its groups; the learner acknowledges them once trained,
or they are released back (a failed train) to be sampled again, so none is trained twice or lost.
`check()` asserts that bookkeeping.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any


class GroupLedger:
    def __init__(self, capacity: int, max_staleness: int):
        self.capacity, self.max_staleness = capacity, max_staleness
        self._items: OrderedDict[tuple, tuple[int, Any]] = OrderedDict()
        self._leased: dict[tuple, tuple[int, Any]] = {}
        self._seen: set[tuple] = set()  # every key ever added: a second copy of a group is refused
        self.counts: Counter = Counter()
        self.last_sample_lags: list[int] = []

    def add(self, key: tuple, version: int, payload: Any) -> bool:
        """Holds the group; False (and counted) for a key seen before, e.g. a retried call's double."""
        if key in self._seen:
            self.counts["dropped_duplicate"] += 1
            return False
        self._seen.add(key)
        self._items[key] = (version, payload)
        self.counts["added"] += 1
        while len(self._items) > self.capacity:  # oldest out first, counted
            self._items.popitem(last=False)
            self.counts["dropped_overflow"] += 1
        return True

    def sample(self, n: int, learner_version: int) -> list[tuple[tuple, Any]]:
        """Leases up to n groups, oldest first, after dropping any more than max_staleness versions old."""
        for key, (version, _) in list(self._items.items()):
            if learner_version - version > self.max_staleness:
                del self._items[key]
                self.counts["dropped_stale"] += 1
        keys = list(self._items)[:n]
        self.last_sample_lags = [learner_version - self._items[k][0] for k in keys]
        for key in keys:
            self._leased[key] = self._items.pop(key)
        self.counts["sampled"] += len(keys)
        return [(key, self._leased[key][1]) for key in keys]

    def acknowledge(self, keys: list[tuple]) -> None:
        """The learner trained these leased groups."""
        unknown = [key for key in keys if key not in self._leased]
        if unknown:
            raise ValueError(f"groups {unknown} acknowledged but not leased (trained twice?)")
        for key in keys:
            del self._leased[key]
        self.counts["trained"] += len(keys)

    def release(self, keys: list[tuple]) -> None:
        """A failed train: the leased groups go back to the front, to be sampled again."""
        for key in reversed(keys):
            self._items[key] = self._leased.pop(key)
            self._items.move_to_end(key, last=False)
        self.counts["released"] += len(keys)

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        c = self.counts
        dropped = c["dropped_overflow"] + c["dropped_stale"]
        return {"size": len(self), "added": c["added"], "sampled": c["sampled"], "trained": c["trained"],
                "released": c["released"], "dropped_overflow": c["dropped_overflow"],
                "dropped_stale": c["dropped_stale"], "dropped_duplicate": c["dropped_duplicate"],
                "in_flight": len(self._leased), "dropped": dropped}

    def check(self) -> None:
        s = self.stats()
        if s["added"] != s["size"] + s["in_flight"] + s["trained"] + s["dropped"] \
                or s["sampled"] != s["trained"] + s["in_flight"] + s["released"]:
            raise AssertionError(f"buffer accounting broken: {s}")
