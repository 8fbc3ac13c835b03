"""The learner rank as a Ray actor: rl_system.learner.Learner plus the object store."""
from __future__ import annotations

import socket

import ray

from rl_system.learner import Learner


@ray.remote
class LearnerRank(Learner):
    def master_address(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def setup(self, master_addr: str, master_port: int) -> None:
        gpus = ray.get_gpu_ids() if self.device.type != "cpu" else []
        super().setup(master_addr, master_port, int(gpus[0]) if gpus else 0)

    def train(self, group_refs: list) -> dict:
        return super().train(ray.get(group_refs))

    def publish(self) -> list:
        """Puts the current weights once in the object store (rank 0); returns [ref] or []."""
        packed = self.packed_weights()
        return [] if packed is None else [ray.put(packed)]
