"""Replay-buffer policy with exact accounting; the Ray actor stores ObjectRefs in it as payloads.

Every group that enters ends in exactly one of: held, leased (sampled, being trained), trained,
or dropped with a reason. A sample leases its groups; the learner acknowledges them once trained,
or they are released back (a failed train) to be sampled again, so none is trained twice or lost.
`check()` asserts that bookkeeping.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any


class SeenKeys:
    """The integer keys added so far, in memory bounded by `window`.

    Keys are numbered as groups are submitted (the driver's sampler positions) and arrive nearly in
    order, so every key below `floor` counts as seen and only those above it are kept. A key that
    never arrives would hold the floor back: once more than `window` keys wait above it, the floor
    moves up to the lowest of them, and a key below it that arrives after all is refused like a double.
    """

    def __init__(self, window: int):
        self.window, self.floor = window, 0
        self._above: set[int] = set()

    def __contains__(self, key: int) -> bool:
        return key < self.floor or key in self._above

    def __len__(self) -> int:
        """Keys kept in memory."""
        return len(self._above)

    def add(self, key: int) -> None:
        self._above.add(key)
        if len(self._above) > self.window:
            self.floor = min(self._above)
        while self.floor in self._above:
            self._above.remove(self.floor)
            self.floor += 1


class GroupLedger:
    def __init__(self, capacity: int, max_staleness: int):
        self.capacity, self.max_staleness = capacity, max_staleness
        self._items: OrderedDict[int, tuple[int, Any]] = OrderedDict()
        self._leased: dict[int, tuple[int, Any]] = {}
        self.seen = SeenKeys(window=capacity)  # a second copy of a group is refused, in bounded memory
        self.counts: Counter = Counter()
        self.last_sample_lags: list[int] = []

    def add(self, key: int, version: int, payload: Any) -> bool:
        """Holds the group; False (and counted) for a key seen before, e.g. a retried call's double."""
        if key in self.seen:
            self.counts["dropped_duplicate"] += 1
            return False
        self.seen.add(key)
        self._items[key] = (version, payload)
        self.counts["added"] += 1
        while len(self._items) > self.capacity:  # oldest out first, counted
            self._items.popitem(last=False)
            self.counts["dropped_overflow"] += 1
        return True

    def sample(self, n: int, learner_version: int) -> list[tuple[int, Any]]:
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

    def acknowledge(self, keys: list[int]) -> None:
        """The learner trained these leased groups."""
        unknown = [key for key in keys if key not in self._leased]
        if unknown:
            raise ValueError(f"groups {unknown} acknowledged but not leased (trained twice?)")
        for key in keys:
            del self._leased[key]
        self.counts["trained"] += len(keys)

    def release(self, keys: list[int]) -> None:
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
