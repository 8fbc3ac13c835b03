from __future__ import annotations

import ray

from rl_system.buffer import GroupLedger


@ray.remote(num_cpus=0)
class ReplayBuffer:
    """Bounded store of ObjectRefs of scored groups, tagged (prompt_id, policy_version).

    Refs are kept wrapped in lists so Ray never resolves them here: the payload stays in the
    object store until a learner rank reads it.
    """

    def __init__(self, capacity: int, max_staleness: int):
        self.ledger = GroupLedger(capacity, max_staleness)

    def add(self, key: tuple, version: int, group_ref: list) -> int:
        self.ledger.add(key, version, group_ref[0])
        return len(self.ledger)

    def sample(self, n: int, learner_version: int) -> tuple[list, list[int]]:
        batch = self.ledger.sample(n, learner_version)
        return [ref for _, ref in batch], self.ledger.last_sample_lags

    def acknowledge(self, num_trained: int) -> dict:
        self.ledger.acknowledge(num_trained)
        self.ledger.check()
        return self.ledger.stats()

    def stats(self) -> dict:
        return self.ledger.stats()
