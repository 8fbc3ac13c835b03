"""The learner rank as a Ray actor: rl_system.learner.Learner plus the object store."""
from __future__ import annotations

import socket

import ray

from actors.group import assigned_gpu_index
from rl_system.learner import Learner


@ray.remote
class LearnerRank(Learner):
    def __init__(self, *args):
        super().__init__(*args, gpu_index=assigned_gpu_index())
        self._sent_bytes: tuple[int, list] | None = None  # (version, [ref]) put for readers off this node

    def master_address(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def train(self, group_refs: list) -> dict:
        return super().train(ray.get(group_refs))

    def publish(self) -> list:
        """Rank 0 packs the current weights into its shared slots and puts their description (not the
        bytes) in the object store; returns [ref] or []. Readers on this node map the slot; others
        ask this actor for the bytes (`published_bytes`)."""
        packed = self.packed_weights()
        if packed is None:
            return []
        context = ray.get_runtime_context()
        return [ray.put({**packed, "data": None, "node": context.get_node_id(), "publisher": context.current_actor})]

    def published_bytes(self, version: int) -> list:
        """[ref] to the bytes of `version` in the object store, put once for all readers that cannot
        map the slot (on another node, or without shared memory)."""
        if self._sent_bytes is None or self._sent_bytes[0] != version:
            self._sent_bytes = (version, [ray.put(self._publish_slots.data(version))])
        return self._sent_bytes[1]
