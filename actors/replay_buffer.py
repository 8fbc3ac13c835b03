from __future__ import annotations

import ray

from rl_system.buffer import GroupLedger


@ray.remote(num_cpus=0)
class ReplayBuffer:
    """Bounded store of ObjectRefs of scored groups, keyed by the sampler position of their prompt.

    Refs are kept wrapped in lists so Ray never resolves them here: the payload stays in the
    object store until a learner rank reads it, and a dropped group's payload is freed with its ref.
    """

    def __init__(self, capacity: int, max_staleness: int):
        self.ledger = GroupLedger(capacity, max_staleness)

    def add(self, key: int, version: int, group_ref: list) -> bool:
        return self.ledger.add(key, version, group_ref[0])

    def sample(self, n: int, learner_version: int) -> tuple[list, list[int]]:
        """Leases up to n groups: [(key, [ref])], and how many versions each lags."""
        batch = self.ledger.sample(n, learner_version)
        return [(key, [ref]) for key, ref in batch], self.ledger.last_sample_lags

    def acknowledge(self, keys: list[int]) -> dict:
        self.ledger.acknowledge(keys)
        self.ledger.check()
        return self.ledger.stats()

    def release(self, keys: list[int]) -> None:
        self.ledger.release(keys)

    def stats(self) -> dict:
        return self.ledger.stats()
